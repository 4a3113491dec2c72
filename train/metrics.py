"""PSNR and SSIM on the Y channel, with a border shaved, as super-resolution papers report them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def luma(pixels: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 Y in [16, 235] from H×W×3 uint8 RGB, as float64."""
    rgb = pixels.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def _shaved(pixels: np.ndarray, border: int) -> np.ndarray:
    y = luma(pixels)
    return y[border:-border, border:-border] if border else y


def psnr_y(result: np.ndarray, reference: np.ndarray, border: int) -> float:
    """PSNR in dB between two H×W×3 uint8 images on Y, `border` pixels shaved on each side."""
    error = np.mean((_shaved(result, border) - _shaved(reference, border)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def ssim_y(result: np.ndarray, reference: np.ndarray, border: int) -> float:
    """SSIM (Wang et al., 2004: 11×11 Gaussian window, σ 1.5) on Y with a shaved border."""
    x = torch.from_numpy(_shaved(result, border))[None, None]
    y = torch.from_numpy(_shaved(reference, border))[None, None]
    coordinates = torch.arange(11, dtype=torch.float64) - 5
    gauss = torch.exp(-(coordinates**2) / (2 * 1.5**2))
    window = (gauss[:, None] * gauss[None, :] / gauss.sum() ** 2)[None, None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    covariance = F.conv2d(x * y, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * covariance + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())
