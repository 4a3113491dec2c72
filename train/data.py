"""Training photos: decoded once, kept in memory, cut into random crops on demand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from srgan.engines import ImageReadError, SrganError, read_image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".pam"})
WarningCallback = Callable[[str], None]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """N×3×H×W float in [0, 1] → N×H×W×3 uint8."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def degraded_pair(photo: np.ndarray, scale: int, crop: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A photo as (HR, LR) for scoring: its centre crop of `crop` pixels (0: all of it) trimmed
    to a multiple of `scale`, and the LR that the training degradation makes of that."""
    if crop:
        top, left = max(0, (photo.shape[0] - crop) // 2), max(0, (photo.shape[1] - crop) // 2)
        photo = photo[top : top + crop, left : left + crop]
    hr = np.array(photo[: photo.shape[0] // scale * scale, : photo.shape[1] // scale * scale])  # writable
    lr = to_uint8(bicubic_downscale(torch.from_numpy(hr).permute(2, 0, 1)[None].float().div(255), scale))[0]
    return hr, lr


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
        path
        for path in Path(folder).rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
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


Photo = Path | tuple[Path, Path]
"""A training item: an HR photo (its LR made by bicubic downscaling) or an (HR, LR) pair."""


@dataclass(frozen=True)
class PhotoSplit:
    training: list[Photo]
    validation: list[Photo]


def find_pairs(hr_folder: Path, lr_folder: Path, warn: WarningCallback) -> list[tuple[Path, Path]]:
    """(HR, LR) files matched by relative path without extension; unmatched HR files are warned."""
    low = {path.relative_to(lr_folder).with_suffix(""): path for path in find_images(lr_folder)}
    pairs = []
    for path in find_images(hr_folder):
        match = low.get(path.relative_to(hr_folder).with_suffix(""))
        if match is None:
            warn(f"skipped: {path}: no LR image of the same name in {lr_folder}")
        else:
            pairs.append((path, match))
    return pairs


def split_photos(photos: list[Photo], holdout: int, seed: int) -> PhotoSplit:
    """Hold out `holdout` photos for validation, chosen by seed, the same on every run."""
    if len(photos) <= holdout:
        raise ImageReadError(f"{len(photos)} photos found; need more than the {holdout} held out for validation")
    order = np.random.default_rng(seed).permutation(len(photos))
    held = set(order[:holdout].tolist())
    return PhotoSplit(
        training=[photo for index, photo in enumerate(photos) if index not in held],
        validation=[photo for index, photo in enumerate(photos) if index in held],
    )


def load_pair(hr_path: Path, lr_path: Path, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """An aligned (HR, LR) pair of RGB uint8 arrays, HR trimmed to scale × the LR's size.

    Raises ImageReadError when a file is unreadable or the sizes do not fit the scale.
    """
    hr, lr = load_photo(hr_path, 0), load_photo(lr_path, 0)
    rows, columns = lr.shape[0] * scale, lr.shape[1] * scale
    if not (rows <= hr.shape[0] < rows + scale and columns <= hr.shape[1] < columns + scale):
        raise ImageReadError(
            f"{lr_path}: {lr.shape[1]}×{lr.shape[0]} is not 1/{scale} of {hr_path} ({hr.shape[1]}×{hr.shape[0]});"
            " pair LR and HR images of matching sizes"
        )
    return np.ascontiguousarray(hr[:rows, :columns]), lr


class CropSampler:
    """Random aligned HR/LR crops with flips and 90° rotations from photos held in memory.

    Items are HR photos, whose LR crops are made with `bicubic_downscale`, or (HR, LR) pairs,
    whose LR crops are cut from the LR image.
    """

    def __init__(self, photos: list[Photo], crop: int, max_side: int, warn: WarningCallback, scale: int = 4) -> None:
        self.crop = crop
        self.scale = scale
        self.images: list[np.ndarray] = []
        self.low: list[np.ndarray | None] = []
        for item in photos:
            try:
                if isinstance(item, tuple):
                    image, low = load_pair(item[0], item[1], scale)
                else:
                    image, low = load_photo(item, max_side), None
            except Exception as error:  # any failure of one photo is that photo's, not the run's
                warn(f"skipped: {describe_failure(item, error)}")
                continue
            if min(image.shape[:2]) < crop:
                warn(f"skipped: {item if isinstance(item, Path) else item[0]}: smaller than the {crop}-pixel crop")
                continue
            self.images.append(image)
            self.low.append(low)
        if not self.images:
            raise ImageReadError(
                f"no usable training photos among {len(photos)} files; add photos at least {crop} pixels wide"
            )
        areas = np.array([image.shape[0] * image.shape[1] for image in self.images], dtype=np.float64)
        self._weights = areas / areas.sum()  # big photos hold more distinct crops

    def sample(self, count: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """HR crops count×3×crop×crop and LR crops count×3×(crop/s)×(crop/s), float32 in [0, 1]."""
        return self.to_tensors(self.cut(count, rng), torch.device("cpu"))

    def cut(self, count: int, rng: np.random.Generator) -> Crops:
        """The random crops of one batch as uint8 arrays, before conversion (the CPU part of sampling)."""
        scale, crop_size = self.scale, self.crop
        small = crop_size // scale
        high = np.empty((count, crop_size, crop_size, 3), dtype=np.uint8)
        low = np.empty((count, small, small, 3), dtype=np.uint8)
        paired = np.zeros(count, dtype=bool)
        for index in range(count):
            chosen = rng.choice(len(self.images), p=self._weights)
            image, low_image = self.images[chosen], self.low[chosen]
            # Aligned with the LR grid, so that a pair's LR crop covers exactly the HR crop.
            top = rng.integers(0, (image.shape[0] - crop_size) // scale + 1) * scale
            left = rng.integers(0, (image.shape[1] - crop_size) // scale + 1) * scale
            flip, turns = rng.random() < 0.5, int(rng.integers(0, 4))
            high[index] = _augment(image[top : top + crop_size, left : left + crop_size], flip, turns)
            if low_image is not None:
                paired[index] = True
                low[index] = _augment(
                    low_image[top // scale : top // scale + small, left // scale : left // scale + small], flip, turns
                )
        return Crops(high, low, paired)

    def to_tensors(self, crops: Crops, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(HR, LR) float32 batches on `device`; the bicubic LR is made there, so a GPU does that work."""
        high = torch.from_numpy(crops.high)
        if device.type == "cuda":
            high = high.pin_memory()
        hr = high.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        lr = bicubic_downscale(hr, self.scale)
        if crops.paired.any():
            paired = torch.from_numpy(crops.paired).to(device)
            given = torch.from_numpy(crops.low).to(device).permute(0, 3, 1, 2).float().div_(255)
            lr[paired] = given[paired]
        return hr, lr


@dataclass(frozen=True)
class Crops:
    """One batch of crops: HR N×crop×crop×3 and LR N×(crop/s)×(crop/s)×3 uint8, and which LR are given."""

    high: np.ndarray
    low: np.ndarray
    paired: np.ndarray


def describe_failure(item: Photo, error: Exception) -> str:
    """One line for a photo that could not be used: the core's own message, or the file and the error."""
    if isinstance(error, SrganError):
        return str(error)
    path = item if isinstance(item, Path) else item[0]
    detail = " ".join(str(error).split())[:160] or type(error).__name__
    return f"{path}: cannot be read ({detail})"


def _augment(crop: np.ndarray, flip: bool, turns: int) -> np.ndarray:
    return np.rot90(crop[:, ::-1] if flip else crop, k=turns)
