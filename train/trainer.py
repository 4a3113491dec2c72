"""The pretraining stage (SRResNet with a pixel loss): steps, checkpoints, validation, export."""

from __future__ import annotations

import copy
import csv
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engines import (
    GeneratorConfig,
    Precision,
    SRGANGenerator,
    TileSettings,
    TorchBackend,
    Upscaler,
    fold_batchnorm,
    resolve_device,
    save_model,
)
from engines.atomic import atomic_path

from .data import CropSampler, PhotoSplit, bicubic_downscale, bicubic_upscale, load_photo
from .metrics import psnr_y, ssim_y
from .settings import TrainSettings

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "generator.safetensors"


@dataclass(frozen=True)
class Validation:
    step: int
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """N×3×H×W float in [0, 1] → N×H×W×3 uint8."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Trainer:
    """Owns the generator, its EMA copy, the optimizer and the step count of one run."""

    def __init__(self, settings: TrainSettings, split: PhotoSplit, run_dir: Path, warn: Callable[[str], None]) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.split = split
        self.device = resolve_device(settings.device)
        self.autocast_dtype = self._autocast_dtype()
        torch.manual_seed(settings.seed)
        config = GeneratorConfig(settings.scale, settings.blocks, settings.channels, settings.batchnorm)
        self.generator = SRGANGenerator(config).to(self.device, memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=settings.learning_rate, betas=(0.9, 0.999))
        self.step = 0
        self.rng = np.random.default_rng(settings.seed)
        self.sampler = CropSampler(split.training, settings.hr_crop, settings.max_side, warn)
        self.validation_images = [self._validation_crop(path) for path in split.validation]

    def _autocast_dtype(self) -> torch.dtype | None:
        if self.settings.precision == "bf16" or (self.settings.precision == "auto" and self.device.type == "cuda"):
            return torch.bfloat16
        return None

    def _validation_crop(self, path: Path) -> np.ndarray:
        image = load_photo(path, self.settings.max_side)
        side, scale = self.settings.validation_crop, self.settings.scale
        height, width = image.shape[:2]
        if side:
            top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
            image = image[top : top + side, left : left + side]
        height, width = image.shape[0] // scale * scale, image.shape[1] // scale * scale
        return np.ascontiguousarray(image[:height, :width])

    def train_step(self) -> float:
        """One optimizer step on a fresh batch; returns the pixel loss."""
        hr = self.sampler.sample(self.settings.batch_size, self.rng).to(self.device)
        lr = bicubic_downscale(hr, self.settings.scale).contiguous(memory_format=torch.channels_last)
        self.generator.train()
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            sr = self.generator(lr)
        loss_function = F.mse_loss if self.settings.pixel_loss == "mse" else F.l1_loss
        loss = loss_function(sr.float(), hr)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.generator.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        return loss.detach().item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.settings.ema_decay if self.settings.ema_decay else 0.0
        decay = min(decay, (1 + self.step) / (10 + self.step))  # warm-up: early weights fade fast
        for average, current in zip(self.ema.state_dict().values(), self.generator.state_dict().values()):
            if average.is_floating_point():
                average.lerp_(current, 1 - decay)
            else:
                average.copy_(current)

    def validate(self) -> Validation:
        """PSNR/SSIM (Y, border shaved) of the EMA generator and of bicubic on held-out crops.

        Runs through the shared `Upscaler`; saves a LR | bicubic | SR | HR grid per validation.
        """
        scale = self.settings.scale
        backend = TorchBackend(fold_batchnorm(self.ema), scale, self.device, Precision.FP32)
        upscaler = Upscaler(backend, TileSettings())
        scores = []
        rows = []
        for hr in self.validation_images:
            hr_tensor = torch.from_numpy(hr).permute(2, 0, 1)[None].float().div(255)
            lr = to_uint8(bicubic_downscale(hr_tensor, scale))[0]
            sr = upscaler.upscale(lr)
            bicubic = to_uint8(bicubic_upscale(torch.from_numpy(lr).permute(2, 0, 1)[None].float().div(255), scale))[0]
            scores.append((psnr_y(sr, hr, scale), ssim_y(sr, hr, scale), psnr_y(bicubic, hr, scale), ssim_y(bicubic, hr, scale)))
            nearest = np.asarray(Image.fromarray(lr).resize(hr.shape[1::-1], Image.Resampling.NEAREST))
            rows.append(np.concatenate([nearest, bicubic, sr, hr], axis=1))
        self._save_grid(rows)
        means = np.mean(np.array(scores), axis=0)
        return Validation(self.step, *(float(value) for value in means))

    def _save_grid(self, rows: list[np.ndarray]) -> None:
        folder = self.run_dir / "validation"
        folder.mkdir(exist_ok=True)
        width = max(row.shape[1] for row in rows)
        padded = [np.pad(row, ((0, 4), (0, width - row.shape[1]), (0, 0))) for row in rows]
        Image.fromarray(np.concatenate(padded)).save(folder / f"step{self.step:07d}.png")

    def save_checkpoint(self) -> Path:
        """Everything needed to continue exactly: weights, optimizer, step and RNG states."""
        path = self.run_dir / CHECKPOINT_NAME
        state = {
            "generator": self.generator.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
        }
        with atomic_path(path) as temporary:
            torch.save(state, temporary)
        return path

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.generator.load_state_dict(state["generator"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.rng.bit_generator.state = json.loads(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"].cpu())

    def export(self, validation: Validation | None, photos: int, seconds: float) -> Path:
        """The EMA generator as a model file `srgan upscale --model` loads, metadata filled in."""
        summary = {
            "stage": self.settings.stage,
            "data": f"{photos} photos ({len(self.split.validation)} held out)",
            "steps": str(self.step),
            "batch": f"{self.settings.batch_size}×{self.settings.hr_crop}²",
            "loss": self.settings.pixel_loss,
            "hours": f"{seconds / 3600:.2f}",
        }
        if validation is not None:
            summary["val_psnr_y"] = f"{validation.psnr:.2f}"
            summary["val_bicubic_psnr_y"] = f"{validation.bicubic_psnr:.2f}"
        path = self.run_dir / MODEL_NAME
        save_model(path, copy.deepcopy(self.ema).cpu(), summary)
        return path


class MetricsLog:
    """Appends one CSV row per event to metrics.csv in the run folder."""

    FIELDS = ("time", "step", "loss", "psnr", "ssim", "bicubic_psnr", "bicubic_ssim")

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.csv"
        if not self.path.exists():
            self._write(dict.fromkeys(self.FIELDS, None), header=True)

    def _write(self, row: dict[str, object], header: bool = False) -> None:
        with self.path.open("a", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(self.FIELDS if header else [row.get(name, "") for name in self.FIELDS])

    def loss(self, step: int, loss: float) -> None:
        self._write({"time": round(time.time(), 1), "step": step, "loss": f"{loss:.6f}"})

    def validation(self, result: Validation) -> None:
        self._write({"time": round(time.time(), 1), "step": result.step, "psnr": f"{result.psnr:.4f}",
                     "ssim": f"{result.ssim:.5f}", "bicubic_psnr": f"{result.bicubic_psnr:.4f}",
                     "bicubic_ssim": f"{result.bicubic_ssim:.5f}"})
