"""Shared test helpers: small real models and images made on the spot."""

from __future__ import annotations


import numpy as np
import torch

from srgan.engines import GeneratorConfig, SRGANGenerator

TINY = GeneratorConfig(scale=4, blocks=1, channels=8, batchnorm=True)


def tiny_generator(config: GeneratorConfig = TINY, seed: int = 0) -> SRGANGenerator:
    """A small generator whose outputs spread over [0, 1] rather than saturating.

    BatchNorm statistics are made non-trivial so that folding them is really exercised.
    """
    torch.manual_seed(seed)
    generator = SRGANGenerator(config)
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
        generator.tail.weight.mul_(0.5)
        generator.tail.bias.fill_(0.5)
    return generator.eval()


def receptive_radius(config: GeneratorConfig) -> int:
    """Input pixels on each side that can influence one output pixel (an upper bound)."""
    # head 9×9: 4; two 3×3 per block; the trunk's closing 3×3: 1; each ×2 stage's 3×3 at its
    # input resolution, and the 9×9 tail at the output resolution.
    radius = 4 + 2 * config.blocks + 1
    resolution = 1
    for _ in range(config.upsample_stages):
        radius += 1 / resolution
        resolution *= 2
    radius += 4 / resolution
    return int(np.ceil(radius))


def random_image(height: int, width: int, channels: int = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    peak = np.iinfo(dtype).max
    return rng.integers(0, peak + 1, size=(height, width, channels), dtype=np.int64).astype(dtype)
