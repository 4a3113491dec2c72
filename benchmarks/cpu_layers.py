"""Where one CPU tile's time goes: each layer of the eager CPU network, and its share of the fp32 peak.

Runs one square tile (default: the backend's CPU tile) of the paper's generator, in the form
`TorchBackend` runs on a CPU (BatchNorm folded, the tail before the last shuffle, sub-pixel
stages in bands), times every leaf module with forward hooks (best of --repeats after a warm-up),
and prints per layer shape: milliseconds per tile, share of the tile, GFLOP/s and share of the
peak `benchmarks/cpu_peak.py` computes for the threads used.

    python benchmarks/cpu_layers.py --threads 1 [--tile 384 --precision fp32]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from srgan.engines import Precision, TorchBackend, fold_batchnorm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_peak import describe_cpu  # noqa: E402
from upscale_cpu import make_generator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tile", type=int, default=None, help="tile side in input pixels (default: the CPU's)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backend = TorchBackend(fold_batchnorm(make_generator()), 4, torch.device("cpu"), Precision(args.precision))
    side = args.tile or backend.preferred_tile_size
    tile = torch.rand(1, 3, side, side)
    seconds: Counter[str] = Counter()
    flops: Counter[str] = Counter()
    started: dict[torch.nn.Module, float] = {}

    def before(module: torch.nn.Module, _inputs) -> None:
        started[module] = time.perf_counter()

    def after(module: torch.nn.Module, inputs, output: torch.Tensor) -> None:
        weight = getattr(module, "weight", None)
        label = f"{type(module).__name__} {tuple(weight.shape) if weight is not None else ''}"
        seconds[label] += time.perf_counter() - started.pop(module)
        if isinstance(module, torch.nn.Conv2d):
            flops[label] += 2 * output.shape[0] * output.shape[2] * output.shape[3] * module.weight.numel()

    leaves = [m for m in backend.network.modules() if not list(m.children()) and not isinstance(m, torch.nn.Sequential)]
    for module in leaves:
        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)
    backend.infer(tile)  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        seconds.clear()
        flops.clear()
        begun = time.perf_counter()
        backend.infer(tile)
        elapsed = time.perf_counter() - begun
        if elapsed < best:
            best, kept_seconds, kept_flops = elapsed, Counter(seconds), Counter(flops)
    cpu = describe_cpu(threads=args.threads)
    print(cpu.header())
    print(f"{backend.name}, one {side}² tile, {args.threads} thread(s): {best * 1000:.0f} ms (best of {args.repeats})")
    print(f"{'layer (weight shape)':40} {'ms':>9} {'of tile':>8} {'GFLOP/s':>8} {'of peak':>8}")
    for label, value in kept_seconds.most_common():
        rate = kept_flops[label] / value / 1e9 if kept_flops[label] else 0.0
        peak_share = f"{rate / cpu.gflops:7.0%}" if rate else ""
        print(f"{label:40} {value * 1000:9.1f} {value / best:7.1%} {rate:8.1f} {peak_share:>8}")


if __name__ == "__main__":
    main()
