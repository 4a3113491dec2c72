"""Output megapixels per second of every backend available here, and the folder pipeline.

Prints, from one run: the paper's generator (16 blocks, 64 channels, ×4, seeded weights)
upscaling one image through `Upscaler` with each backend and precision this machine offers
(eager fp32; eager bf16 on a CPU, fp16 and bf16 on CUDA, all channels_last; the AOTInductor
package; TensorRT where torch-tensorrt and CUDA are present), as ratios against eager fp32.
Then files per second for a folder of images through `srgan upscale`'s batch loop (decode,
upscale, encode, write) against pure inference on the same, already decoded, images.

The issue's size is 1920×1080 → 7680×4320 (--width 1920 --height 1080, the default on CUDA);
on a CPU the default is 480×270, since one full-HD image takes about a minute there.

    python benchmarks/backends.py [--width W --height H --repeats 2 --files 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from srgan.engines import (
    FilePipeline,
    FileTask,
    OutputOptions,
    Picture,
    PipelineSettings,
    Precision,
    TileSettings,
    create_upscaler,
    load_model,
    read_image,
    save_model,
    tensorrt_unavailable_reason,
    write_image,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upscale_cpu import make_generator, photo_like  # noqa: E402

from srgan.cli.options import DEFAULT_PNG_COMPRESSION  # noqa: E402
from srgan.cli.upscale import READ_AHEAD, writer_threads  # noqa: E402


def timed(function, repeats: int) -> float:
    function()
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def folder_images(photo: Path | None, height: int, width: int, count: int) -> list[np.ndarray]:
    """`count` different height×width RGB images: crops of a real photo, else shifted synthetic ones."""
    if photo is None:
        small = photo_like(height, width, seed=3)
        return [np.roll(small, index * 7, axis=1) for index in range(count)]
    source = read_image(photo).pixels[:, :, :3]
    rows, columns = source.shape[0] - height, source.shape[1] - width
    if rows < 0 or columns < 0:
        raise SystemExit(f"{photo}: smaller than the {width}×{height} crops; give a larger photo")
    rng = np.random.default_rng(0)
    return [
        np.ascontiguousarray(source[top : top + height, left : left + width])
        for top, left in zip(rng.integers(0, rows + 1, count), rng.integers(0, columns + 1, count))
    ]


def variants(device: str) -> list[tuple[str, Precision]]:
    rows = [("eager", Precision.FP32)]
    rows += [("eager", Precision.BF16)] if device == "cpu" else [("eager", Precision.FP16), ("eager", Precision.BF16)]
    rows += [("compiled", Precision.FP32 if device == "cpu" else Precision.FP16)]
    if device == "cuda" and tensorrt_unavailable_reason() is None:
        rows += [("tensorrt", Precision.FP16)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--photo", type=Path, help="cut the folder's images from this photo (else synthetic)")
    parser.add_argument(
        "--backends", default="eager,compiled,tensorrt", help="comma-separated subset of eager, compiled, tensorrt"
    )
    args = parser.parse_args()
    args.backends = args.backends.split(",")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    width = args.width or (1920 if device == "cuda" else 480)
    height = args.height or (1080 if device == "cuda" else 270)
    image = photo_like(height, width)
    output_mpx = width * height * 16 / 1e6
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {name}; {width}×{height} → {output_mpx:.1f} output Mpx; default tiles")
    if device == "cuda" and tensorrt_unavailable_reason():
        print(f"TensorRT not measured: {tensorrt_unavailable_reason()}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model_path = folder / "bench.safetensors"
        save_model(model_path, make_generator())
        model = load_model(model_path)
        rates = {}
        print(f"{'backend':34} {'out Mpx/s':>10} {'vs eager fp32':>14} {'setup s':>8}", flush=True)
        for backend, precision in variants(device):
            if backend not in args.backends:
                continue
            started = time.perf_counter()
            upscaler = create_upscaler(model, device, precision, TileSettings(), backend, folder / "engines")
            setup = time.perf_counter() - started
            for autotune in (False, True) if device == "cuda" and backend == "eager" else (False,):
                torch.backends.cudnn.benchmark = autotune
                seconds = timed(lambda: upscaler.upscale(image), args.repeats)
                rate = output_mpx / seconds
                label = upscaler.backend.name + (" cudnn autotune" if autotune else "")
                rates[label] = rate
                baseline = next(iter(rates.values()))
                print(f"{label:34} {rate:10.3f} {rate / baseline:13.2f}× {setup:8.1f}", flush=True)
            torch.backends.cudnn.benchmark = False

        best = max(rates, key=lambda label: rates[label])
        backend = "auto"
        upscaler = create_upscaler(model, device, Precision.AUTO, TileSettings(), backend, folder / "engines")
        pixels = folder_images(args.photo, height // 2, width // 2, args.files)
        inference = timed(lambda: [upscaler.upscale(item) for item in pixels], 1)
        print(
            f"folder of {args.files} images ({width // 2}×{height // 2}), {upscaler.backend.name} (auto; fastest:"
            f" {best}), {writer_threads()} encoding thread(s); pure inference {args.files / inference:.2f} files/s"
        )
        for suffix in ("png", "jpg"):
            inputs = folder / f"in-{suffix}"
            inputs.mkdir()
            for index, item in enumerate(pixels):
                write_image(Picture(item), inputs / f"image{index:02d}.{suffix}")
            files = sorted(inputs.iterdir())
            levels = (DEFAULT_PNG_COMPRESSION, 1) if suffix == "png" else (DEFAULT_PNG_COMPRESSION,)
            settings = PipelineSettings(read_ahead=READ_AHEAD, encoders=writer_threads(), max_pixels=0)
            for level in levels:
                out = folder / f"out-{suffix}-{level}"
                tasks = [FileTask(path, out / path.name) for path in files]
                run = FilePipeline(upscaler, OutputOptions(png_compression=level, name_template="{stem}"), settings)
                pipeline = timed(lambda: list(run.run(tasks)), 1)
                detail = f", PNG level {level}" if suffix == "png" else ""
                print(
                    f"  {suffix} in, {suffix} out{detail}: srgan upscale loop {args.files / pipeline:.2f} files/s,"
                    f" {inference / pipeline:.0%} of pure inference"
                )


if __name__ == "__main__":
    main()
