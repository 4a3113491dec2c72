"""Time and size of PNG output at each `--png-compression` level, on real upscaled content.

Upscales a 480×270 crop of a photo with the bundled model, tiles the result to 3840×2160 (the
output of a 960×540 input) and writes it with `write_image` at levels 1, 3, 6 and 9, one thread,
best of 2. Prints seconds and megabytes per image, as ratios against the default level 6.

    python benchmarks/png_levels.py --photo data/photos/aitzgorri_by_Aitzol_Berasategi.jpg
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from srgan.engines import Picture, Precision, TileSettings, create_upscaler, default_model_path, load_model, read_image
from srgan.engines import write_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, required=True)
    args = parser.parse_args()
    crop = np.ascontiguousarray(read_image(args.photo).pixels[:270, :480, :3])
    upscaler = create_upscaler(load_model(default_model_path()), "auto", Precision.AUTO, TileSettings())
    if upscaler.backend.device.type == "cpu":
        upscaler = create_upscaler(load_model(default_model_path()), "cpu", Precision.BF16, TileSettings())
    picture = Picture(np.ascontiguousarray(np.tile(upscaler.upscale(crop), (2, 2, 1))))
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "out.png"
        for level in (1, 3, 6, 9):
            best = float("inf")
            for _ in range(2):
                started = time.perf_counter()
                write_image(picture, target, png_compression=level)
                best = min(best, time.perf_counter() - started)
            results[level] = (best, target.stat().st_size / 1e6)
    seconds6, size6 = results[6]
    print(f"3840×2160 upscaled photo content, one thread; {args.photo.name}")
    print(f"{'level':>5} {'seconds':>8} {'MB':>6} {'speed vs 6':>11} {'size vs 6':>10}")
    for level, (seconds, size) in results.items():
        print(f"{level:>5} {seconds:8.2f} {size:6.2f} {seconds6 / seconds:10.2f}× {size / size6:9.2f}×")


if __name__ == "__main__":
    main()
