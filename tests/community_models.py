"""Small random-weight models of the community's architectures, built with spandrel's own classes.

Used by the tests and by benchmarks/community_models.py; nothing here downloads weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from srgan.engines.spandrel_models import spandrel_module


def _esrgan(channels: int, scale: int, shuffle: int | None = None) -> nn.Module:
    """shuffle: Real-ESRGAN's 2× (and 1×) models pixel-unshuffle their input first; the network is then built
    for `shuffle` times the scale on `shuffle`² times the channels."""
    from spandrel.architectures.ESRGAN import ESRGAN

    if shuffle:
        return ESRGAN(
            in_nc=channels * shuffle**2,
            out_nc=channels,
            num_filters=8,
            num_blocks=1,
            scale=scale * shuffle,
            shuffle_factor=shuffle,
        )
    return ESRGAN(in_nc=channels, out_nc=channels, num_filters=8, num_blocks=1, scale=scale)


def _compact(channels: int, scale: int) -> nn.Module:
    from spandrel.architectures.Compact import Compact

    return Compact(num_in_ch=channels, num_out_ch=channels, num_feat=8, num_conv=2, upscale=scale)


def _span(channels: int, scale: int) -> nn.Module:
    from spandrel.architectures.SPAN import SPAN

    return SPAN(num_in_ch=channels, num_out_ch=channels, feature_channels=8, upscale=scale)


def _swinir(channels: int, scale: int) -> nn.Module:
    from spandrel.architectures.SwinIR import SwinIR

    return SwinIR(
        img_size=16,
        in_chans=channels,
        embed_dim=12,
        depths=[1],
        num_heads=[2],
        window_size=4,
        mlp_ratio=1.0,
        upscale=scale,
        upsampler="pixelshuffle",
        resi_connection="1conv",
    )


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "ESRGAN": _esrgan,
    "Compact": _compact,
    "SPAN": _span,
    "SwinIR": _swinir,
}


def community_state_dict(architecture: str, channels: int = 3, scale: int = 4, seed: int = 0, **options) -> dict:
    """Random weights of a tiny model of `architecture`, as a state dict spandrel detects."""
    spandrel_module()  # spandrel's architecture classes import through the same path as the core
    torch.manual_seed(seed)
    network = BUILDERS[architecture](channels, scale, **options)
    return {name: value.detach().clone().contiguous() for name, value in network.state_dict().items()}


def save_community_model(path: Path, state: dict, wrap: str | None = None) -> Path:
    """Write a state dict as .safetensors, or as a PyTorch file, optionally wrapped as BasicSR does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save({wrap: state} if wrap else state, path)
    return path


def spandrel_whole_image(state: dict, pixels: np.ndarray) -> np.ndarray:
    """The reference: spandrel's own whole-image call on H×W×C uint8 pixels, as uint8."""
    descriptor = spandrel_module().ModelLoader().load_from_state_dict(state).eval()
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        result = descriptor(image)
    return (result[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
