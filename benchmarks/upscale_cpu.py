"""CPU throughput of the tiled-inference core against a naive baseline, as a share of the CPU's peak.

Prints, from one run on this machine:
  * the CPU (model, the flags that matter, cores) and its fp32 FMA peak (benchmarks/cpu_peak.py);
  * output megapixels per second of the paper's 16-block, 64-channel generator, through a naive
    baseline (the whole image at once, NCHW, eager, BatchNorm not folded; same weights; in a
    fresh process, as a plain PyTorch script runs) and through `Upscaler` in fp32, in bf16, with
    `--precision auto --backend auto` (what `srgan upscale` does by default), and with an
    AOTInductor package (--compiled builds one first); each with its ratio to naive and the
    share of the fp32 peak its convolutions reach (bf16 can pass 100%: it is not fp32 work);
  * end to end, fresh processes: `srgan upscale` of a PNG (start-up, model load, decode, encode
    included) against a naive script that loads the same weights, reads the PNG with PIL, runs
    the whole image in fp32 and writes a PNG: with the benchmark's weights in fp32, and with the
    bundled model and srgan's defaults (what `srgan upscale in.png` does: bf16 where the CPU has
    it natively, the model's cost in bf16 being measured);
  * the peak resident memory of `srgan upscale` on a 2000×1500 PNG, in a fresh process.

Paths are timed in turns (one of each, then again), best of --repeats after a warm-up turn, so
a machine shared with other work favours none of them; the load average is printed too. On a
machine whose cores are busy with other work, `--threads 1 --cpu-time` times CPU seconds of one
thread instead of wall seconds: what the code costs, without the waits that sharing adds (with
two threads, every parallel operation waits for the slower thread's next time slice).

`--isa avx2` runs everything with oneDNN and ATen limited to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2,
ATEN_CPU_CAPABILITY=avx2): the code an AVX2-only CPU runs, on this CPU's cores; the peak is then
counted at 8 lanes.

Targets (issues 2 and 15): Upscaler fp32 ≥ 2× naive and ≥ 60% of the fp32 peak; `srgan upscale`
≥ 2× the naive script end to end; peak RSS ≤ 1.0 GB.

    python benchmarks/upscale_cpu.py [--width 512 --height 384 --repeats 2 --tile N --compiled --skip-rss --isa avx2]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srgan.engines import (
    EngineCache,
    GeneratorConfig,
    Precision,
    SRGANGenerator,
    TileSettings,
    create_upscaler,
    default_model_path,
    load_model,
    save_model,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_peak import describe_cpu, network_gflop_per_output_mpx  # noqa: E402

NAIVE_SCRIPT = """
import json, sys
import numpy as np, torch
from PIL import Image
from safetensors import safe_open
from srgan.engines import GeneratorConfig, SRGANGenerator
with safe_open(sys.argv[1], "pt") as weights:
    meta = weights.metadata()
    state = {name: weights.get_tensor(name).float() for name in weights.keys()}
config = GeneratorConfig(int(meta["scale"]), int(meta["blocks"]), int(meta["channels"]), meta["batchnorm"] == "true")
generator = SRGANGenerator(config)
generator.load_state_dict(state, strict=False)
generator.eval()
pixels = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
with torch.no_grad():
    image = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float().div(255)
    result = generator(image).clamp(0, 1).mul(255).round().byte()[0].permute(1, 2, 0).numpy()
Image.fromarray(result).save(sys.argv[3])
"""

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
    return timed_in_turns({"only": function}, repeats)["only"]


def clock() -> float:
    """Wall seconds, or with --cpu-time CPU seconds of this process and its finished children."""
    if not CPU_TIME:
        return time.perf_counter()
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


CPU_TIME = "--cpu-time" in sys.argv


def timed_in_turns(functions: dict[str, object], repeats: int) -> dict[str, float]:
    """Best time of each function (see `clock`), calling them in turns: a warm-up turn, then `repeats`."""
    best = {name: float("inf") for name in functions}
    for turn in range(repeats + 1):
        for name, function in functions.items():
            started = clock()
            function()
            if turn:
                best[name] = min(best[name], clock() - started)
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
        *(["--cpu-time"] if args.cpu_time else []),
        *(["--threads", str(args.threads)] if args.threads else []),
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
    parser.add_argument("--compiled", action="store_true", help="build an AOTInductor package and time it too")
    parser.add_argument("--fma-units", type=int, default=2, help="FMA units per core, for the peak")
    parser.add_argument("--clock-ghz", type=float, default=None, help="core clock for the peak (default: measured)")
    parser.add_argument("--skip-rss", action="store_true", help="skip the peak-RSS run")
    parser.add_argument("--skip-speed", action="store_true", help="skip the throughput runs")
    parser.add_argument("--skip-end-to-end", action="store_true", help="skip the srgan upscale runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--cpu-time", action="store_true", help="time CPU seconds, not wall seconds (see above)")
    parser.add_argument(
        "--isa", choices=("native", "avx2"), default="native", help="avx2: run the code an AVX2-only CPU runs"
    )
    parser.add_argument("--naive-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.isa == "avx2" and os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2":
        # Both libraries read their variable once, when they load: run again with them set.
        limited = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
        sys.exit(subprocess.run([sys.executable, __file__, *sys.argv[1:]], env=limited).returncode)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the fresh processes

    generator = make_generator()
    image = photo_like(args.height, args.width)
    if args.naive_only:
        print(naive_seconds(generator, image, args.repeats))
        return
    output_mpx = image.shape[0] * image.shape[1] * 16 / 1e6
    cpu = describe_cpu(fma_units=args.fma_units, clock_ghz=args.clock_ghz)
    gflop = network_gflop_per_output_mpx(generator, 4)
    print(cpu.header())
    print(f"timing: {'CPU seconds' if args.cpu_time else 'wall seconds'}, {torch.get_num_threads()} threads")
    print(
        f"torch {torch.__version__}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; input"
        f" {args.width}×{args.height} → {output_mpx:.2f} output Mpx; {gflop:.3f} GFLOP of convolutions per"
        f" output Mpx; tile {args.tile or 'default'}"
    )
    with tempfile.TemporaryDirectory() as folder:
        model_path = Path(folder) / "bench.safetensors"
        save_model(model_path, generator, {"note": "random weights for benchmarking"})
        if not args.skip_speed:
            print_speed(args, model_path, Path(folder), image, cpu.gflops, gflop)
        if not args.skip_end_to_end:
            print_end_to_end(args, model_path, Path(folder), image)
        print_rss(args, model_path, Path(folder))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def print_speed(args, model_path: Path, folder: Path, image: np.ndarray, peak: float, gflop: float) -> None:
    """The throughput table: naive, fp32, bf16, auto, compiled; Mpx/s, ratio to naive, share of peak."""
    output_mpx = image.shape[0] * image.shape[1] * 16 / 1e6
    naive = output_mpx / naive_seconds_in_fresh_process(args)
    settings = TileSettings(tile_size=args.tile)
    engines = folder / "engines"
    model = load_model(model_path)
    upscalers = {
        "Upscaler fp32": create_upscaler(model, "cpu", Precision.FP32, settings, "eager"),
        "Upscaler bf16": create_upscaler(model, "cpu", Precision.BF16, settings, "eager"),
    }
    if args.compiled:
        started = time.perf_counter()
        compiled = create_upscaler(model, "cpu", Precision.AUTO, settings, "compiled", engines)
        upscalers[f"compiled {compiled.backend.precision.value} (built in {time.perf_counter() - started:.0f} s)"] = (
            compiled
        )
        for package in engines.glob("compiled/*/*.pt2"):
            timing = EngineCache.timing_of(package)
            if timing is not None:
                print(
                    f"recorded at build (wall): compiled {timing.engine_seconds:.3f} s per {timing.engine_tile}² tile,"
                    f" eager {timing.eager_seconds:.3f} s per {timing.eager_tile}² tile ({timing.speedup:.2f}× per"
                    f" kept pixel), loading {timing.load_seconds:.2f} s"
                )
    auto = create_upscaler(model, "cpu", Precision.AUTO, settings, "auto", engines)
    upscalers[f"auto ({auto.backend.name})"] = auto
    seconds = timed_in_turns({label: (lambda u=u: u.upscale(image)) for label, u in upscalers.items()}, args.repeats)
    rows = [("naive: whole image, NCHW, BN, fp32", naive)]
    rows += [(label, output_mpx / value) for label, value in seconds.items()]
    print(f"{'path':46} {'out Mpx/s':>10} {'vs naive':>9} {'of fp32 peak':>13}")
    for label, rate in rows:
        print(f"{label:46} {rate:10.3f} {rate / naive:8.2f}× {rate * gflop / peak:12.0%}")


def print_end_to_end(args, model_path: Path, folder: Path, image: np.ndarray) -> None:
    """`srgan upscale` against the naive script, fresh processes, in turns: the benchmark's weights
    in fp32, and the bundled model with srgan's defaults."""
    source = folder / "e2e_input.png"
    Image.fromarray(image).save(source)
    bundled = default_model_path()
    default_choice = create_upscaler(load_model(bundled), "cpu", Precision.AUTO, TileSettings(), "eager")
    srgan = [sys.executable, "-m", "srgan.cli", "upscale", str(source), "--overwrite"]
    naive = [sys.executable, "-c", NAIVE_SCRIPT]
    pairs = {
        "benchmark weights, fp32": (
            [*naive, str(model_path), str(source), str(folder / "naive.png")],
            [*srgan, "--model", str(model_path), "-o", str(folder / "fp32.png"), "--precision", "fp32"],
        ),
        f"bundled model, srgan's defaults ({default_choice.backend.precision.value})": (
            [*naive, str(bundled), str(source), str(folder / "naive_bundled.png")],
            [*srgan, "-o", str(folder / "bundled.png")],
        ),
    }
    runs = {}
    for label, (naive_command, srgan_command) in pairs.items():
        runs[(label, "naive script")] = lambda c=naive_command: subprocess.run(c, capture_output=True, check=True)
        runs[(label, "srgan upscale")] = lambda c=srgan_command: subprocess.run(c, capture_output=True, check=True)
    seconds = timed_in_turns(runs, args.repeats)
    unit = "CPU s" if args.cpu_time else "s"
    print(f"end to end, {image.shape[1]}×{image.shape[0]} PNG → PNG, fresh processes (naive: PIL, whole image, fp32):")
    for label in pairs:
        naive_seconds, srgan_seconds = seconds[(label, "naive script")], seconds[(label, "srgan upscale")]
        print(
            f"  {label:44} naive {naive_seconds:6.1f} {unit}, srgan upscale {srgan_seconds:6.1f} {unit}:"
            f" {naive_seconds / srgan_seconds:5.2f}×"
        )


def print_rss(args: argparse.Namespace, model_path: Path, folder: Path) -> None:
    if not args.skip_rss:
        peak, seconds = peak_rss_gib(model_path, folder, args.tile)
        print(f"peak RSS, srgan upscale 2000×1500 → 8000×6000 PNG, fp32 CPU: {peak:.2f} GiB ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
