"""Time and size of PNG output at each `--png-compression` level, on upscaled photographs.

Upscales a 480×270 centre crop of each of the first --count images in --photos (folders or files)
with the bundled model (bf16 on a CPU) and writes each 1920×1080 result with `write_image` at levels 1, 6, 8 and
9, and, for comparison, at level 6 with zlib's default strategy (how level 6 wrote before it
took the run-length strategy: `png_strategy`). One thread, best of 2 per file; prints the totals
and their ratios against level 6.

    python benchmarks/png_levels.py --photos data/photos [--count 6]
    python benchmarks/png_levels.py --photos data/photos/calla.png data/photos/city.png
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srgan.engines import Picture, Precision, TileSettings, create_upscaler, default_model_path, load_model, read_image
from srgan.engines import write_image

SUFFIXES = {".jpg", ".jpeg", ".png"}


def best_seconds(write, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        write()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, nargs="+", required=True, help="folders of photos, or photos")
    parser.add_argument("--count", type=int, default=6)
    args = parser.parse_args()
    found = [path for given in args.photos for path in (sorted(given.iterdir()) if given.is_dir() else [given])]
    photos = [path for path in found if path.suffix.lower() in SUFFIXES][: args.count]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = Precision.AUTO if device == "cuda" else Precision.BF16
    upscaler = create_upscaler(load_model(default_model_path()), device, precision, TileSettings())
    torch.set_num_threads(1)
    totals: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "out.png"
        for photo in photos:
            pixels = read_image(photo).pixels[:, :, :3]
            top, left = max(0, (pixels.shape[0] - 270) // 2), max(0, (pixels.shape[1] - 480) // 2)
            picture = Picture(upscaler.upscale(np.ascontiguousarray(pixels[top : top + 270, left : left + 480])))
            writers = {
                str(level): (lambda level=level: write_image(picture, target, png_compression=level))
                for level in (1, 6, 8, 9)
            }
            image = Image.fromarray(picture.pixels)
            writers["6, default strategy"] = lambda: image.save(
                target, "PNG", compress_level=6, compress_type=zlib.Z_DEFAULT_STRATEGY
            )
            for label, write in writers.items():
                seconds = best_seconds(write)
                total = totals.setdefault(label, [0.0, 0.0])
                total[0] += seconds
                total[1] += target.stat().st_size / 1e6
    seconds6, size6 = totals["6"]
    print(f"{len(photos)} upscaled images, 1920×1080 each, one thread; totals")
    print(f"{'level':>20} {'seconds':>8} {'MB':>7} {'speed vs 6':>11} {'size vs 6':>10}")
    for label, (seconds, size) in totals.items():
        print(f"{label:>20} {seconds:8.2f} {size:7.2f} {seconds6 / seconds:10.2f}× {size / size6:9.3f}×")


if __name__ == "__main__":
    main()
