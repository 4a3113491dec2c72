"""Files per second through `srgan watch --once` against `srgan upscale` on the same folder.

Both run as fresh processes on the same folder of small images with the same model (the
bundled default unless --model), so start-up is included in both; the watcher's extra work is
hashing, the journal, and the settle interval before the first file (--settle, here 0.2 s).

    python benchmarks/watch_vs_upscale.py [--files 40 --size 64 --model PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    model = ["--model", str(args.model)] if args.model else []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "in"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for index in range(args.files):
            small = Image.fromarray((rng.random((args.size // 8, args.size // 8, 3)) * 255).astype(np.uint8))
            small.resize((args.size, args.size), Image.Resampling.BICUBIC).save(folder / f"image{index:03d}.png")
        srgan = [sys.executable, "-m", "srgan.cli"]
        upscale = run(
            [*srgan, "upscale", str(folder), "-o", str(Path(scratch) / "upscaled"), "--device", "cpu", *model]
        )
        watch = run(
            [
                *srgan,
                "watch",
                str(folder),
                "-o",
                str(Path(scratch) / "watched"),
                "--once",
                "--settle",
                "0.2",
                "--device",
                "cpu",
                "--json",
                *model,
            ]
        )
    print(f"{args.files} PNGs of {args.size}×{args.size}, CPU")
    print(f"{'command':24} {'seconds':>8} {'files/s':>8}")
    print(f"{'srgan upscale FOLDER':24} {upscale:8.2f} {args.files / upscale:8.2f}")
    print(f"{'srgan watch --once':24} {watch:8.2f} {args.files / watch:8.2f}")
    print(f"watch / upscale throughput: {upscale / watch:.2f}")


if __name__ == "__main__":
    main()
