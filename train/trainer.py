"""One training run's steps, in either stage (SRResNet with a pixel loss, or SRGAN), with checkpoints,
validation and export."""

from __future__ import annotations

import copy
import csv
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch.nn.parallel import DistributedDataParallel

from srgan.engines import (
    GeneratorConfig,
    ImageReadError,
    Precision,
    SRGANGenerator,
    TileSettings,
    TorchBackend,
    Upscaler,
    atomic_path,
    fold_batchnorm,
    ModelFileError,
    ModelInfo,
    check_finite,
    load_generator,
    read_pytorch,
    resolve_device,
    save_model,
)

from .data import (
    CropSampler,
    describe_failure,
    Crops,
    Photo,
    PhotoSplit,
    bicubic_downscale,
    bicubic_upscale,
    load_pair,
    load_photo,
    to_uint8,
)
from .losses import discriminator_loss, generator_adversarial_loss, gradient_penalty
from .metrics import psnr_y, ssim_y
from .networks import Discriminator, load_vgg19
from .settings import Adversarial, PixelLoss, SettingsError, Stage, TrainSettings

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_KEYS = frozenset({"generator", "ema", "optimizer", "step", "torch_rng"})
MODEL_NAME = "generator.safetensors"


@dataclass(frozen=True)
class Validation:
    step: int
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float


class Trainer:
    """Owns the networks, optimizers and step count of one run, on one process.

    Under torchrun each process is one rank: the networks are wrapped in DDP, every rank draws
    its own crops, and only rank 0 validates, checkpoints and exports.
    """

    def __init__(self, settings: TrainSettings, split: PhotoSplit, run_dir: Path, warn: Callable[[str], None]) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.split = split
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.device = self._device()
        self.autocast_dtype = self._autocast_dtype()
        torch.manual_seed(settings.seed)
        self.init_info: ModelInfo | None = None  # the file the generator started from, if any
        config = GeneratorConfig(settings.scale, settings.blocks, settings.channels, settings.batchnorm)
        generator = self._initial_generator(config).to(self.device, memory_format=torch.channels_last)
        self.ema = copy.deepcopy(generator).eval().requires_grad_(False)
        self.generator = self._distributed(generator)
        self.optimizer = torch.optim.Adam(generator.parameters(), lr=settings.learning_rate, betas=(0.9, 0.999))
        # fp16 gradients underflow without loss scaling; the scalers do nothing otherwise.
        fp16 = self.autocast_dtype == torch.float16
        self.g_scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.d_scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.discriminator: torch.nn.Module | None = None
        if settings.stage is Stage.GAN:
            # Not wrapped in DDP: it runs several forward passes per update, which DDP does not
            # allow; its gradients are averaged across ranks by hand instead.
            discriminator = Discriminator(batchnorm=settings.adversarial is not Adversarial.WGAN_GP).to(self.device)
            self.discriminator = discriminator
            betas = (0.0, 0.9) if settings.adversarial is Adversarial.WGAN_GP else (0.9, 0.999)
            self.d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=settings.learning_rate, betas=betas)
            self.vgg = load_vgg19(Path(settings.vgg_weights) if settings.vgg_weights else None).to(self.device)
        self.step = 0
        self.sampler = CropSampler(split.training, settings.hr_crop, settings.max_side, warn, settings.scale)
        self._cutter = ThreadPoolExecutor(1, thread_name_prefix="crops")
        self._upcoming: tuple[int, Future[Crops]] = (-1, Future())
        self.validation_images = self._validation_images(warn) if self.rank == 0 else []

    def _device(self) -> torch.device:
        device = resolve_device(self.settings.device)
        if device.type == "cuda" and dist.is_initialized():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        return device

    def _initial_generator(self, config: GeneratorConfig) -> SRGANGenerator:
        if not self.settings.init_generator:
            return SRGANGenerator(config)
        generator, info = load_generator(Path(self.settings.init_generator))
        self.init_info = info
        if info.config.batchnorm and not config.batchnorm and replace(info.config, batchnorm=False) == config:
            # Fine-tuning a BatchNorm model in its BN-free form: the same function, and training
            # then behaves as inference does (no batch statistics).
            return fold_batchnorm(generator)
        if info.config != config:
            raise SettingsError(f"{info.path}: is a {info.config}, but the settings ask for {config}")
        return generator

    def _distributed(self, network: torch.nn.Module) -> torch.nn.Module:
        if not dist.is_initialized():
            return network
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(network, device_ids=device_ids)

    def _autocast_dtype(self) -> torch.dtype | None:
        precision = self.settings.precision
        if precision is Precision.FP16:
            if self.device.type != "cuda":
                raise SettingsError("precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
            return torch.float16
        if precision is Precision.BF16 or (precision is Precision.AUTO and self.device.type == "cuda"):
            return torch.bfloat16
        return None

    def _validation_images(self, warn: Callable[[str], None]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The held-out pairs; a photo that cannot be read is skipped with a warning, as in training."""
        images = []
        for item in self.split.validation:
            try:
                images.append(self._validation_crop(item))
            except Exception as error:  # any failure of one photo is that photo's, not the run's
                warn(f"skipped for validation: {describe_failure(item, error)}")
        if not images:
            raise ImageReadError(
                f"none of the {len(self.split.validation)} held-out photos could be read; add readable photos"
            )
        return images

    def _validation_crop(self, item: Photo) -> tuple[np.ndarray, np.ndarray]:
        """A held-out (HR, LR) pair, centre-cropped; LR from the pair or by bicubic downscaling."""
        scale, side = self.settings.scale, self.settings.validation_crop
        if isinstance(item, tuple):
            image, low = load_pair(item[0], item[1], scale)
        else:
            image, low = load_photo(item, self.settings.max_side), None
        rows, columns = image.shape[0] // scale, image.shape[1] // scale
        if not rows or not columns:
            raise ImageReadError(f"{item if isinstance(item, Path) else item[0]}: too small to validate at ×{scale}")
        top, left = (max(0, (rows - side // scale) // 2), max(0, (columns - side // scale) // 2)) if side else (0, 0)
        size_rows, size_columns = (min(rows, side // scale), min(columns, side // scale)) if side else (rows, columns)
        # A writable copy: the decoded photo is read-only, which torch.from_numpy warns about.
        hr = np.array(image[top * scale : (top + size_rows) * scale, left * scale : (left + size_columns) * scale])
        if low is None:
            lr = to_uint8(bicubic_downscale(torch.from_numpy(hr).permute(2, 0, 1)[None].float().div(255), scale))[0]
        else:
            lr = np.ascontiguousarray(low[top : top + size_rows, left : left + size_columns])
        return hr, lr

    @property
    def _generator_module(self) -> SRGANGenerator:
        return getattr(self.generator, "module", self.generator)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """HR crops and their LR versions; the crops depend on (seed, rank, step) only."""
        step, upcoming = self._upcoming
        crops = upcoming.result() if step == self.step else self._cut(self.step)
        # The next step's crops are cut on a thread while this step runs on the device.
        self._upcoming = (self.step + 1, self._cutter.submit(self._cut, self.step + 1))
        hr, lr = self.sampler.to_tensors(crops, self.device)
        return hr, lr.contiguous(memory_format=torch.channels_last)

    def _cut(self, step: int) -> Crops:
        rng = np.random.default_rng([self.settings.seed, self.rank, step])
        return self.sampler.cut(self.settings.batch_size, rng)

    def _autocast(self) -> torch.autocast:
        enabled = self.autocast_dtype is not None
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=enabled)

    def _learning_rate(self) -> float:
        drop = self.settings.lr_drop_step and self.step >= self.settings.lr_drop_step
        rate = self.settings.learning_rate / 10 if drop else self.settings.learning_rate
        warmup = self.settings.warmup_steps
        return rate * min(1.0, (self.step + 1) / warmup) if warmup else rate

    def train_step(self) -> dict[str, float]:
        """One optimizer step (both networks in the gan stage) on a fresh batch; returns losses."""
        for optimizer in [self.optimizer] + ([self.d_optimizer] if self.discriminator is not None else []):
            for group in optimizer.param_groups:
                group["lr"] = self._learning_rate()
        hr, lr = self._batch()
        self.generator.train()
        with self._autocast():
            sr = self.generator(lr)
        sr = sr.float()
        losses = {}
        if self.discriminator is not None:
            losses.update(self.discriminator_step(hr, sr.detach()))
        losses.update(self.generator_step(hr, sr))
        self._update_ema()
        self.step += 1
        return losses

    def _pixel_loss(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return (F.mse_loss if self.settings.pixel_loss is PixelLoss.MSE else F.l1_loss)(sr, hr)

    def generator_step(self, hr: torch.Tensor, sr: torch.Tensor) -> dict[str, float]:
        """Pretrain: the pixel loss. GAN: VGG φ5,4 loss (fp32) + adversarial (+ optional pixel)."""
        pixel = self._pixel_loss(sr, hr)
        losses = {"pixel": pixel.detach().item()}
        if self.discriminator is None:
            total = pixel
        else:
            scale = self.settings.feature_scale
            with torch.autocast(self.device.type, enabled=False):
                content = F.mse_loss(self.vgg(sr) * scale, self.vgg(hr).detach() * scale)
            self.discriminator.requires_grad_(False)
            with self._autocast():
                fake_logits = self.discriminator(sr).float()
                ragan = self.settings.adversarial is Adversarial.RAGAN
                real_logits = self.discriminator(hr).float().detach() if ragan else None
            self.discriminator.requires_grad_(True)
            adversarial = generator_adversarial_loss(self.settings.adversarial, real_logits, fake_logits)
            total = content + self.settings.adversarial_weight * adversarial + self.settings.pixel_weight * pixel
            losses.update(content=content.detach().item(), adversarial=adversarial.detach().item())
        self.optimizer.zero_grad(set_to_none=True)
        self.g_scaler.scale(total).backward()
        if self.settings.grad_clip:
            self.g_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.generator.parameters(), self.settings.grad_clip)
        self.g_scaler.step(self.optimizer)
        self.g_scaler.update()
        losses["total"] = total.detach().item()
        return losses

    def discriminator_step(self, hr: torch.Tensor, sr: torch.Tensor) -> dict[str, float]:
        """One discriminator update on real crops and (detached) generated ones."""
        assert self.discriminator is not None  # only called in the gan stage
        self.discriminator.train()
        with self._autocast():
            real_logits = self.discriminator(hr).float()
            fake_logits = self.discriminator(sr).float()
        loss = discriminator_loss(self.settings.adversarial, real_logits, fake_logits)
        if self.settings.adversarial is Adversarial.WGAN_GP:
            loss = loss + self.settings.gp_weight * gradient_penalty(self.discriminator, hr, sr)
        self.d_optimizer.zero_grad(set_to_none=True)
        self.d_scaler.scale(loss).backward()
        if dist.is_initialized():
            for parameter in self.discriminator.parameters():
                dist.all_reduce(parameter.grad)
                parameter.grad /= dist.get_world_size()
        self.d_scaler.step(self.d_optimizer)
        self.d_scaler.update()
        return {"discriminator": loss.detach().item()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.settings.ema_decay if self.settings.ema_decay else 0.0
        if not self.settings.init_generator:
            # From random weights the first ones should fade fast; a given generator is kept.
            decay = min(decay, (1 + self.step) / (10 + self.step))
        averages, currents = [], []
        for average, current in zip(
            self.ema.state_dict().values(), self._generator_module.state_dict().values(), strict=True
        ):
            if average.is_floating_point():
                averages.append(average)
                currents.append(current)
            else:
                average.copy_(current)
        # One fused update instead of a kernel launch per tensor, which dominated small GPU steps.
        torch._foreach_lerp_(averages, currents, 1 - decay)

    def validate(self) -> Validation:
        """PSNR/SSIM (Y, border shaved) of the EMA generator and of bicubic on held-out crops.

        Runs through the shared `Upscaler`; saves a LR | bicubic | SR | HR grid per validation.
        """
        scale = self.settings.scale
        backend = TorchBackend(fold_batchnorm(copy.deepcopy(self.ema).cpu()), scale, self.device, Precision.FP32)
        upscaler = Upscaler(backend, TileSettings())
        scores = []
        rows = []
        for hr, lr in self.validation_images:
            sr = upscaler.upscale(lr)
            bicubic = to_uint8(bicubic_upscale(torch.from_numpy(lr).permute(2, 0, 1)[None].float().div(255), scale))[0]
            scores.append(
                (psnr_y(sr, hr, scale), ssim_y(sr, hr, scale), psnr_y(bicubic, hr, scale), ssim_y(bicubic, hr, scale))
            )
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
            "generator": self._generator_module.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "torch_rng": torch.get_rng_state(),
            "g_scaler": self.g_scaler.state_dict(),
            "d_scaler": self.d_scaler.state_dict(),
        }
        if self.discriminator is not None:
            state["discriminator"] = self.discriminator.state_dict()
            state["d_optimizer"] = self.d_optimizer.state_dict()
        with atomic_path(path) as temporary:
            torch.save(state, temporary)
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Continue from a checkpoint that `save_checkpoint` wrote.

        Raises SettingsError, one line naming the file, when it is unreadable, truncated, not a
        checkpoint, holds non-finite weights, or belongs to a run with other settings.
        """
        try:
            state = read_pytorch(path)
        except ModelFileError as error:
            raise SettingsError(f"cannot resume: {error}") from error
        if not isinstance(state, dict):
            held = type(state).__name__
            raise SettingsError(f"{path}: not a checkpoint of an srgan training run (it holds a {held})")
        missing = sorted(CHECKPOINT_KEYS - set(state))
        if missing:
            raise SettingsError(f"{path}: not a checkpoint of an srgan training run (no {', '.join(missing)})")
        if self.discriminator is not None and "discriminator" not in state:
            raise SettingsError(
                f"{path}: a pretrain checkpoint; start the gan stage in a new run with --init-generator"
            )
        try:
            for part in ("generator", "ema"):
                check_finite(path, state[part])
            self._restore(state)
        except ModelFileError as error:
            raise SettingsError(f"cannot resume: {error}") from error
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as error:
            detail = " ".join(str(error).split())[:200] or type(error).__name__
            raise SettingsError(
                f"{path}: does not fit this run ({detail}); resume with the settings it was written with"
            ) from error

    def _restore(self, state: dict) -> None:
        self._generator_module.load_state_dict(state["generator"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.d_optimizer.load_state_dict(state["d_optimizer"])
        step = state["step"]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step {step!r} is not a step count")
        self.step = step
        torch.set_rng_state(state["torch_rng"].cpu())
        self.g_scaler.load_state_dict(state.get("g_scaler", {}))
        self.d_scaler.load_state_dict(state.get("d_scaler", {}))

    def export(self, validation: Validation | None, photos: int, seconds: float) -> Path:
        """The EMA generator as a model file `srgan upscale --model` loads, metadata filled in."""
        summary = {
            "stage": self.settings.stage.value,
            "data": f"{photos} photos ({len(self.split.validation)} held out)",
            "steps": str(self.step),
            "batch": f"{self.settings.batch_size}×{self.settings.hr_crop}²",
            "loss": self.settings.pixel_loss.value
            if self.settings.stage is Stage.PRETRAIN
            else f"vgg54+{self.settings.adversarial.value}",
            "hours": f"{seconds / 3600:.2f}",
            **lineage(self.init_info, self.step),
        }
        if validation is not None:
            summary["val_psnr_y"] = f"{validation.psnr:.2f}"
            summary["val_bicubic_psnr_y"] = f"{validation.bicubic_psnr:.2f}"
        path = self.run_dir / MODEL_NAME
        save_model(path, copy.deepcopy(self.ema).cpu(), summary)
        return path


def lineage(start: ModelInfo | None, steps: int) -> dict[str, str]:
    """Metadata that keeps a fine-tuned model's history: what it started from and its steps in all."""
    if start is None:
        return {"total_steps": str(steps)}
    before = int(start.training.get("total_steps") or start.training.get("steps") or 0)
    return {
        "started_from": f"{start.path.name} (sha256 {start.sha256[:12]}, {before} steps)",
        "total_steps": str(before + steps),
    }


class MetricsLog:
    """Appends one CSV row per event to metrics.csv in the run folder, and writes the same
    scalars to TensorBoard (run_dir/tensorboard) when the tensorboard package is installed."""

    FIELDS = (
        "time",
        "step",
        "loss",
        "discriminator",
        "content",
        "adversarial",
        "psnr",
        "ssim",
        "bicubic_psnr",
        "bicubic_ssim",
    )

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.csv"
        if not self.path.exists():
            self._write(dict.fromkeys(self.FIELDS, None), header=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional (pip install 'srgan[train]')
            self.board = None
        else:
            self.board = SummaryWriter(str(run_dir / "tensorboard"))

    def _scalars(self, group: str, step: int, values: dict[str, float]) -> None:
        if self.board is not None:
            for name, value in values.items():
                self.board.add_scalar(f"{group}/{name}", value, step)
            self.board.flush()

    def _write(self, row: dict[str, object], header: bool = False) -> None:
        with self.path.open("a", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(self.FIELDS if header else [row.get(name, "") for name in self.FIELDS])

    def losses(self, step: int, losses: dict[str, float]) -> None:
        named = {"loss": losses["total"], **{key: value for key, value in losses.items() if key in self.FIELDS}}
        self._write(
            {"time": round(time.time(), 1), "step": step, **{key: f"{value:.6f}" for key, value in named.items()}}
        )
        self._scalars("loss", step, losses)

    def validation(self, result: Validation) -> None:
        self._write(
            {
                "time": round(time.time(), 1),
                "step": result.step,
                "psnr": f"{result.psnr:.4f}",
                "ssim": f"{result.ssim:.5f}",
                "bicubic_psnr": f"{result.bicubic_psnr:.4f}",
                "bicubic_ssim": f"{result.bicubic_ssim:.5f}",
            }
        )
        self._scalars(
            "validation",
            result.step,
            {
                "psnr_y": result.psnr,
                "ssim_y": result.ssim,
                "bicubic_psnr_y": result.bicubic_psnr,
                "bicubic_ssim_y": result.bicubic_ssim,
            },
        )
