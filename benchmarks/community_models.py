"""CPU speed and seam error per community architecture: srgan's core against a plain per-tile loop.

The plain loop is the kind Real-ESRGAN's `RealESRGANer.tile_process` and ComfyUI's upscale node
use: one tile at a time, a fixed overlap (`--plain-overlap`, Real-ESRGAN's tile_pad default 10),
each tile's centre pasted without blending. Both run the same network (random weights of the
architecture's usual size, made with spandrel's classes) on the same image in one run; the seam
error of each is its largest and mean difference, in 8-bit levels, from one whole-image call.

    python benchmarks/community_models.py --size 256 --tile 128

Prints one line per architecture. Nothing is downloaded. The weights are random but drawn
signal-preserving (He-normal for the PReLU/LeakyReLU slopes), so that, as in trained models,
context far from a pixel still changes it; with PyTorch's default initialisation the signal
fades within a few layers and every loop looks seamless. Speeds hold for real models of the
same size; seam errors are indicative only.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from srgan.engines import Precision, TileSettings, create_upscaler, load_model
from srgan.engines.spandrel_models import spandrel_module

# Usual sizes of published models: 4x-UltraSharp (ESRGAN 64nf 23nb), realesr-general-x4v3
# (Compact 64nf 32 convs), SPAN 48 features, a two-stage SwinIR-light. ESRGAN is cut to 4
# blocks and SwinIR to 2 stages so that the run finishes on a 2-core machine; their speed
# scales with the block count.
ARCHITECTURES = {
    "ESRGAN (64nf, 4nb)": ("ESRGAN", dict(in_nc=3, out_nc=3, num_filters=64, num_blocks=4, scale=4)),
    "Compact (64nf, 32 convs)": ("Compact", dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=32, upscale=4)),
    "SPAN (48 features)": ("SPAN", dict(num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=4)),
    "SwinIR (light, 2 stages)": (
        "SwinIR",
        dict(
            img_size=64,
            embed_dim=60,
            depths=[2, 2],
            num_heads=[6, 6],
            window_size=8,
            mlp_ratio=2.0,
            upscale=4,
            upsampler="pixelshuffledirect",
            resi_connection="1conv",
        ),
    ),
}


def build(kind: str, options: dict) -> dict:
    spandrel_module()
    import spandrel.architectures as architectures

    module = getattr(architectures, kind)
    torch.manual_seed(0)
    network = getattr(module, kind)(**options)
    state = {name: value.detach().clone().contiguous() for name, value in network.state_dict().items()}
    for value in state.values():
        if value.ndim == 4 and value.shape[-1] > 1:
            torch.nn.init.kaiming_normal_(value, a=0.25)
    return state


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    return (tensor[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def plain_tiles(network, image: torch.Tensor, scale: int, tile: int, pad: int) -> np.ndarray:
    """Real-ESRGAN's tile loop: non-batched tiles of `tile` with `pad` context, centres pasted."""
    _, channels, height, width = image.shape
    output = torch.empty(1, channels, height * scale, width * scale)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            y0, x0 = max(top - pad, 0), max(left - pad, 0)
            y1, x1 = min(bottom + pad, height), min(right + pad, width)
            with torch.inference_mode():
                result = network(image[:, :, y0:y1, x0:x1])
            output[:, :, top * scale : bottom * scale, left * scale : right * scale] = result[
                :, :, (top - y0) * scale : (bottom - y0) * scale, (left - x0) * scale : (right - x0) * scale
            ]
    return to_uint8(output)


def seam(first: np.ndarray, second: np.ndarray) -> str:
    difference = np.abs(first.astype(np.int32) - second.astype(np.int32))
    return f"max {difference.max():3d} mean {difference.mean():.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="side of the square test image")
    parser.add_argument("--tile", type=int, default=128, help="tile size for both, in input pixels")
    parser.add_argument("--plain-overlap", type=int, default=10, help="the plain loop's fixed overlap")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"image {args.size}×{args.size}, tile {args.tile}, CPU fp32; output Mpx/s and seam error in 8-bit levels")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(args.size // 16, args.size // 16, 3), dtype=np.uint8)
    pixels = np.ascontiguousarray(base.repeat(16, axis=0).repeat(16, axis=1))  # flat patches and edges
    import tempfile
    from pathlib import Path

    from safetensors.torch import save_file

    for label, (kind, options) in ARCHITECTURES.items():
        state = build(kind, options)
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "model.safetensors"
            save_file(state, path)
            loaded = load_model(path)
        upscaler = create_upscaler(loaded, "cpu", Precision.FP32, TileSettings(tile_size=args.tile))
        scale = loaded.info.scale
        image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            whole = to_uint8(loaded.network(image))
        megapixels = args.size * args.size * scale * scale / 1e6
        upscaler.upscale(pixels[:64, :64])  # warm-up
        start = time.perf_counter()
        ours = upscaler.upscale(pixels)
        ours_seconds = time.perf_counter() - start
        start = time.perf_counter()
        plain = plain_tiles(loaded.network, image, scale, args.tile, args.plain_overlap)
        plain_seconds = time.perf_counter() - start
        overlap = upscaler.resolved_settings(args.size, args.size).overlap
        print(
            f"{label:26s} srgan core {megapixels / ours_seconds:6.3f} Mpx/s"
            f" (overlap {overlap}, seam {seam(ours, whole)})"
            f" | plain loop {megapixels / plain_seconds:6.3f} Mpx/s (overlap {args.plain_overlap},"
            f" seam {seam(plain, whole)}) | ratio {plain_seconds / ours_seconds:.2f}×"
        )


if __name__ == "__main__":
    main()
