"""Training settings: one typed, frozen structure, decoded strictly from TOML and flags."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from srgan.engines import SrganError


class SettingsError(SrganError):
    """A settings file or flag that cannot be used."""


def _option(default: Any, description: str) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass(frozen=True)
class TrainSettings:
    """Everything a training run depends on; saved in the run folder as settings.toml."""

    stage: str = _option("pretrain", "pretrain (SRResNet, pixel loss) or gan (SRGAN: VGG + adversarial loss)")
    init_generator: str = _option("", "model file to start from; the gan stage needs a pretrained generator")
    scale: int = _option(4, "upscaling factor: 2, 4 or 8")
    blocks: int = _option(16, "residual blocks in the generator")
    channels: int = _option(64, "feature channels in the generator")
    batchnorm: bool = _option(True, "BatchNorm in the residual blocks, as in the paper")
    lr_dir: str = _option(
        "", "folder of LR images paired by name with the photos (HR); empty: LR by bicubic downscaling"
    )
    hr_crop: int = _option(96, "side of the random high-resolution crops, in pixels")
    batch_size: int = _option(16, "crops per step")
    steps: int = _option(100_000, "optimizer steps in all")
    learning_rate: float = _option(1e-4, "Adam learning rate (generator and discriminator)")
    lr_drop_step: int = _option(
        0, "step after which the learning rate is divided by 10 (the paper: 1e-4, then 1e-5); 0: never"
    )
    warmup_steps: int = _option(
        0, "steps over which the learning rate rises linearly from near 0, which keeps Adam's first steps small"
    )
    pixel_loss: str = _option("mse", "mse or l1")
    pixel_weight: float = _option(
        0.0, "gan stage: weight of an RGB pixel term next to the VGG loss, against colour drift"
    )
    vgg_weights: str = _option(
        "", "gan stage: torchvision VGG19 weights (vgg19-dcbb9e9d.pth); default: the torch hub cache"
    )
    feature_scale: float = _option(1 / 12.75, "gan stage: factor applied to the conv5_4 features before their MSE")
    adversarial: str = _option("bce", "gan stage: bce (the paper's), ragan (relativistic average) or wgan-gp")
    adversarial_weight: float = _option(1e-3, "gan stage: weight of the adversarial loss")
    gp_weight: float = _option(10.0, "wgan-gp: weight of the gradient penalty")
    ema_decay: float = _option(0.999, "decay of the generator's exponential moving average; 0 disables it")
    grad_clip: float = _option(1.0, "largest gradient norm; 0 disables clipping")
    seed: int = _option(0, "seed for weights, crops and the hold-out split")
    precision: str = _option(
        "auto", "auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16 (CUDA, loss-scaled); autocast, losses in fp32"
    )
    device: str = _option("auto", "auto, cpu, cuda or cuda:N")
    max_side: int = _option(2048, "photos with a longer side are downscaled to it before cropping; 0 keeps them")
    holdout: int = _option(4, "photos held out for validation when no validation folder is given")
    validation_crop: int = _option(384, "side of the centre crop of each held-out photo that is validated; 0: whole")
    checkpoint_every: int = _option(500, "steps between checkpoints")
    validate_every: int = _option(500, "steps between validations")

    def __post_init__(self) -> None:
        problems = []
        if self.stage not in ("pretrain", "gan"):
            problems.append(f"stage must be pretrain or gan, not '{self.stage}'")
        if self.stage == "gan" and not self.init_generator:
            problems.append("the gan stage starts from a pretrained generator: set init_generator (--init-generator)")
        if self.adversarial not in ("bce", "ragan", "wgan-gp"):
            problems.append(f"adversarial must be bce, ragan or wgan-gp, not '{self.adversarial}'")
        if self.scale not in (2, 4, 8):
            problems.append(f"scale must be 2, 4 or 8, not {self.scale}")
        if self.pixel_loss not in ("mse", "l1"):
            problems.append(f"pixel_loss must be mse or l1, not '{self.pixel_loss}'")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            problems.append(f"precision must be auto, fp32, bf16 or fp16, not '{self.precision}'")
        if self.hr_crop % self.scale or self.hr_crop < 4 * self.scale:
            problems.append(f"hr_crop {self.hr_crop} must be a multiple of the scale and at least {4 * self.scale}")
        for name in ("blocks", "channels", "batch_size", "steps", "checkpoint_every", "validate_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.warmup_steps < 0 or self.lr_drop_step < 0:
            problems.append("warmup_steps and lr_drop_step must be 0 or more")
        if not 0 <= self.ema_decay < 1:
            problems.append("ema_decay must be in [0, 1)")
        if problems:
            raise SettingsError("; ".join(problems))

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Each setting's one-line description."""
        return {item.name: item.metadata["description"] for item in fields(cls)}

    def to_toml(self) -> str:
        lines = []
        for item in fields(self):
            value = getattr(self, item.name)
            literal = (
                str(value).lower()
                if isinstance(value, bool)
                else repr(value)
                if isinstance(value, (int, float))
                else f'"{value}"'
            )
            lines.append(f"# {item.metadata['description']}\n{item.name} = {literal}")
        return "\n".join(lines) + "\n"


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> TrainSettings:
    """Settings from a TOML file (optional), then overrides (flags), over the defaults.

    Raises SettingsError for unknown keys, values of the wrong type and invalid values.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values.update(tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise SettingsError(f"{path}: cannot read the settings file ({error})") from None
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    known = {item.name: item for item in fields(TrainSettings)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SettingsError(f"{path or 'flags'}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for key, value in values.items():
        expected = type(known[key].default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise SettingsError(f"{path or 'flags'}: {key} must be {expected.__name__}, not {value!r}")
    return dataclasses.replace(TrainSettings(), **values) if values else TrainSettings()
