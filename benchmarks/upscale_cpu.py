"""CPU throughput and memory of the tiled-inference core against a naive baseline.

Prints, from one run on this machine:
  * output megapixels per second of the paper's 16-block, 64-channel generator, through
    `Upscaler` with default settings (fp32 and bf16) and through a naive baseline (the whole
    image at once, NCHW, eager, BatchNorm not folded; same weights), and their ratios. The
    naive baseline runs in a fresh process, as a plain PyTorch script would; it is also shown
    with the allocator setting the CPU backend makes, to separate that gain from tiling's;
  * the peak resident memory of `srgan upscale` on a 2000×1500 PNG, in a fresh process.

Targets (issue 2): Upscaler ≥ 2× naive, ≥ 0.4 output Mpx/s, peak RSS ≤ 1.0 GB.

    python benchmarks/upscale_cpu.py [--width 512 --height 384 --repeats 2 --tile N --skip-rss]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srgan.engines import (
    GeneratorConfig,
    Precision,
    SRGANGenerator,
    TileSettings,
    create_upscaler,
    load_model,
    save_model,
)

RSS_SCRIPT = """
import resource, subprocess, sys
child = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(child.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, child.returncode)
"""


def make_generator(seed: int = 0) -> SRGANGenerator:
    """The paper's generator with seeded weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    generator = SRGANGenerator(GeneratorConfig(scale=4, blocks=16, channels=64, batchnorm=True))
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        generator.tail.bias.fill_(0.5)
    return generator.eval()


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (bicubic-enlarged noise), uint8."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((max(height // 8, 1), max(width // 8, 1), 3)) * 255).astype(np.uint8))
    return np.asarray(small.resize((width, height), Image.BICUBIC))


def timed(function, repeats: int) -> float:
    """Best wall time of `repeats` calls after one warm-up call, in seconds."""
    function()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def naive_seconds(generator: SRGANGenerator, image: np.ndarray, repeats: int) -> float:
    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(255)

    def run() -> None:
        with torch.no_grad():
            generator(tensor).clamp(0, 1).mul(255).round().to(torch.uint8)

    return timed(run, repeats)


def naive_seconds_in_fresh_process(args: argparse.Namespace) -> float:
    """The naive baseline in a new interpreter, untouched by this process's allocator setting."""
    command = [
        sys.executable,
        __file__,
        "--naive-only",
        "--width",
        str(args.width),
        "--height",
        str(args.height),
        "--repeats",
        str(args.repeats),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])


def peak_rss_gib(model_path: Path, folder: Path, tile: int | None) -> tuple[float, float]:
    """Peak RSS of `srgan upscale` on a 2000×1500 PNG, and its wall time."""
    source = folder / "rss_input.png"
    Image.fromarray(photo_like(1500, 2000, seed=1)).save(source)
    command = [
        sys.executable,
        "-m",
        "srgan.cli",
        "upscale",
        str(source),
        "-o",
        str(folder / "rss_output.png"),
        "--model",
        str(model_path),
        "--device",
        "cpu",
        "--overwrite",
        *(["--tile", str(tile)] if tile else []),
    ]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", RSS_SCRIPT, *command], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    peak_kib, status = (int(value) for value in result.stdout.split()[-2:])
    if status != 0:
        raise SystemExit(f"srgan upscale failed with exit code {status}: {result.stderr}")
    return peak_kib / 2**20, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=512, help="input width for the throughput runs")
    parser.add_argument("--height", type=int, default=384, help="input height for the throughput runs")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tile", type=int, default=None, help="tile size instead of the CPU default")
    parser.add_argument("--skip-rss", action="store_true", help="skip the peak-RSS run")
    parser.add_argument("--skip-speed", action="store_true", help="skip the throughput runs")
    parser.add_argument("--naive-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    generator = make_generator()
    image = photo_like(args.height, args.width)
    if args.naive_only:
        print(naive_seconds(generator, image, args.repeats))
        return
    output_mpx = image.shape[0] * image.shape[1] * 16 / 1e6
    with tempfile.TemporaryDirectory() as folder:
        model_path = Path(folder) / "bench.safetensors"
        save_model(model_path, generator, {"note": "random weights for benchmarking"})
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
            f"input {args.width}×{args.height} → {output_mpx:.2f} output Mpx; tile {args.tile or 'default'},"
            f" {TileSettings()}"
        )
        if args.skip_speed:
            print_rss(args, model_path, Path(folder))
            return
        naive = output_mpx / naive_seconds_in_fresh_process(args)
        # Creating the CPU backends applies their allocator setting to this process.
        upscalers = {
            precision: create_upscaler(load_model(model_path), "cpu", precision, TileSettings(tile_size=args.tile))
            for precision in (Precision.FP32, Precision.BF16)
        }
        rows = [
            ("naive: whole image, NCHW, BN, fp32", naive),
            ("naive, with the backend's allocator setting", output_mpx / naive_seconds(generator, image, args.repeats)),
        ]
        for precision, upscaler in upscalers.items():
            seconds = timed(lambda: upscaler.upscale(image), args.repeats)
            tiles = f"tile {args.tile}" if args.tile else "default tiles"
            rows.append((f"Upscaler {tiles}, {precision.value}", output_mpx / seconds))
        print(f"{'path':46} {'out Mpx/s':>10} {'vs naive':>9}")
        for label, rate in rows:
            print(f"{label:46} {rate:10.3f} {rate / naive:8.2f}×")
        print_rss(args, model_path, Path(folder))


def print_rss(args: argparse.Namespace, model_path: Path, folder: Path) -> None:
    if not args.skip_rss:
        peak, seconds = peak_rss_gib(model_path, folder, args.tile)
        print(f"peak RSS, srgan upscale 2000×1500 → 8000×6000 PNG, fp32 CPU: {peak:.2f} GiB ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
