"""Adversarial losses: the paper's, relativistic average (ESRGAN) and WGAN-GP.

Each loss gives the discriminator's loss from its logits on real and generated images, and the
generator's adversarial loss; WGAN-GP adds a gradient penalty computed from the images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .settings import Adversarial


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def discriminator_loss(kind: Adversarial, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss, without any gradient penalty. Logits are N, float32."""
    if kind == Adversarial.BCE:
        return _bce(real_logits, True) + _bce(fake_logits, False)
    if kind == Adversarial.RAGAN:
        return (_bce(real_logits - fake_logits.mean(), True) + _bce(fake_logits - real_logits.mean(), False)) / 2
    if kind == Adversarial.WGAN_GP:
        return fake_logits.mean() - real_logits.mean()
    raise ValueError(f"unknown adversarial loss {kind!r}")


def generator_adversarial_loss(
    kind: Adversarial, real_logits: torch.Tensor | None, fake_logits: torch.Tensor
) -> torch.Tensor:
    """The generator's adversarial loss (non-saturating for bce). ragan needs real_logits."""
    if kind == Adversarial.BCE:
        return _bce(fake_logits, True)
    if kind == Adversarial.RAGAN:
        if real_logits is None:
            raise ValueError("the relativistic loss needs the discriminator's logits on real images")
        return (_bce(real_logits - fake_logits.mean(), False) + _bce(fake_logits - real_logits.mean(), True)) / 2
    if kind == Adversarial.WGAN_GP:
        return -fake_logits.mean()
    raise ValueError(f"unknown adversarial loss {kind!r}")


def gradient_penalty(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's penalty (Gulrajani et al., 2017): (‖∇D(x̂)‖₂ − 1)² on random interpolates."""
    mix = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    interpolates = (mix * real + (1 - mix) * fake).requires_grad_(True)
    logits = discriminator(interpolates)
    (gradients,) = torch.autograd.grad(logits.sum(), interpolates, create_graph=True)
    return ((gradients.flatten(1).norm(dim=1) - 1) ** 2).mean()
