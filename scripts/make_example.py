"""Draw docs/example.png: a small synthetic test chart (edges, text, gradients, fine lines).

It is made rather than photographed so that the repository holds no photos; run it again to
recreate the file byte for byte with the same Pillow version.

    python scripts/make_example.py [OUTPUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 192, 128


def chart() -> Image.Image:
    ramp = np.linspace(0, 255, WIDTH, dtype=np.float32)
    rows = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None]
    pixels = np.stack(
        [
            np.broadcast_to(ramp, (HEIGHT, WIDTH)),
            255 * rows * np.ones((1, WIDTH)),
            np.broadcast_to(ramp[::-1], (HEIGHT, WIDTH)),
        ],
        axis=2,
    )
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.rectangle((8, 8, 88, 60), fill=(245, 245, 240), outline=(20, 20, 20), width=2)
    for step in range(0, 36, 3):
        draw.line((12 + step, 14, 12 + step, 54), fill=(30, 30, 30), width=1)
    for radius in range(4, 26, 5):
        draw.ellipse((140 - radius, 34 - radius, 140 + radius, 34 + radius), outline=(250, 250, 250), width=1)
    draw.polygon([(100, 120), (130, 70), (160, 120)], fill=(200, 40, 40), outline=(0, 0, 0))
    font = ImageFont.load_default()
    draw.text((50, 16), "SR", fill=(0, 0, 0), font=font)
    draw.text((10, 70), "srgan 4x", fill=(255, 255, 255), font=font)
    draw.text((10, 90), "0123456789", fill=(0, 0, 0), font=font)
    return image


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "example.png"
    chart().save(target, optimize=True)
    print(target)
