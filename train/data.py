"""Training photos: decoded once, kept in memory, cut into random crops on demand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engines import ImageReadError, read_image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})
WarningCallback = Callable[[str], None]


def bicubic_downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The degradation used for training and evaluation alike: antialiased bicubic ÷scale.

    hr: N×3×H×W float in [0, 1], H and W multiples of `scale`. Returns N×3×(H/s)×(W/s), clamped.
    """
    return F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True).clamp_(0, 1)


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline that validation compares against. N×3×h×w → N×3×(s·h)×(s·w)."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic").clamp_(0, 1)


def find_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted, hidden ones skipped."""
    return sorted(
        path for path in Path(folder).rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def load_photo(path: Path, max_side: int) -> np.ndarray:
    """An RGB uint8 H×W×3 photo, downscaled (antialiased) so its longer side is ≤ max_side.

    Raises ImageReadError for unreadable files.
    """
    pixels = read_image(path, max_pixels=0).pixels
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    pixels = pixels[:, :, :3] if pixels.shape[2] >= 3 else np.repeat(pixels[:, :, :1], 3, axis=2)
    height, width = pixels.shape[:2]
    if max_side and max(height, width) > max_side:
        factor = max_side / max(height, width)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        pixels = np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).resize(size, Image.Resampling.LANCZOS))
    return np.ascontiguousarray(pixels)


@dataclass(frozen=True)
class PhotoSplit:
    training: list[Path]
    validation: list[Path]


def split_photos(photos: list[Path], holdout: int, seed: int) -> PhotoSplit:
    """Hold out `holdout` photos for validation, chosen by seed, the same on every run."""
    if len(photos) <= holdout:
        raise ImageReadError(f"{len(photos)} photos found; need more than the {holdout} held out for validation")
    order = np.random.default_rng(seed).permutation(len(photos))
    held = set(order[:holdout].tolist())
    return PhotoSplit(
        training=[photo for index, photo in enumerate(photos) if index not in held],
        validation=[photo for index, photo in enumerate(photos) if index in held],
    )


class CropSampler:
    """Random HR crops with flips and 90° rotations from photos held in memory."""

    def __init__(self, photos: list[Path], crop: int, max_side: int, warn: WarningCallback) -> None:
        self.crop = crop
        self.images: list[np.ndarray] = []
        for path in photos:
            try:
                image = load_photo(path, max_side)
            except ImageReadError as error:
                warn(f"skipped: {error}")
                continue
            if min(image.shape[:2]) < crop:
                warn(f"skipped: {path}: smaller than the {crop}-pixel crop")
                continue
            self.images.append(image)
        if not self.images:
            raise ImageReadError(f"no usable training photos among {len(photos)} files; add photos at least {crop} pixels wide")
        areas = np.array([image.shape[0] * image.shape[1] for image in self.images], dtype=np.float64)
        self._weights = areas / areas.sum()  # big photos hold more distinct crops

    def sample(self, count: int, rng: np.random.Generator) -> torch.Tensor:
        """count×3×crop×crop float32 in [0, 1]."""
        crops = np.empty((count, self.crop, self.crop, 3), dtype=np.uint8)
        for index in range(count):
            image = self.images[rng.choice(len(self.images), p=self._weights)]
            top = rng.integers(0, image.shape[0] - self.crop + 1)
            left = rng.integers(0, image.shape[1] - self.crop + 1)
            crop = image[top : top + self.crop, left : left + self.crop]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            crops[index] = np.rot90(crop, k=int(rng.integers(0, 4)))
        return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255)
