"""Training settings: one typed, frozen structure, decoded strictly from TOML and flags.

Each setting declares its type, its description and, for numbers, its bounds once, in its field;
`TrainSettings.__post_init__` checks every value against them, whoever builds the settings (a
TOML file, flags, code), so a NaN learning rate or a negative side never reaches the trainer.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from srgan.engines import MAX_BLOCKS, MAX_CHANNELS, SUPPORTED_SCALES, Precision, SrganError


class SettingsError(SrganError):
    """A settings file or flag that cannot be used."""


class Stage(str, enum.Enum):
    """What a run trains: SRResNet with a pixel loss, or SRGAN from a pretrained generator."""

    PRETRAIN = "pretrain"
    GAN = "gan"


class PixelLoss(str, enum.Enum):
    MSE = "mse"
    L1 = "l1"


class Adversarial(str, enum.Enum):
    """The GAN stage's adversarial loss: the paper's, relativistic average (ESRGAN), or WGAN-GP."""

    BCE = "bce"
    RAGAN = "ragan"
    WGAN_GP = "wgan-gp"


_LARGEST_COUNT = 10**12  # steps and intervals: far beyond any run, small enough for every library


def _option(
    default: Any,
    description: str,
    *,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    below: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A setting: its default, its one-line description, and the values it accepts.

    low/high are inclusive bounds, above/below exclusive ones; choices lists the only values.
    """
    bounds = {"low": low, "high": high, "above": above, "below": below, "choices": choices}
    return field(default=default, metadata={"description": description, **bounds})


@dataclass(frozen=True)
class TrainSettings:
    """Everything a training run depends on; saved in the run folder as settings.toml.

    Raises SettingsError naming every value that is of the wrong type, out of bounds, not one of
    its choices, or inconsistent with another.
    """

    stage: Stage = _option(Stage.PRETRAIN, "pretrain (SRResNet, pixel loss) or gan (SRGAN: VGG + adversarial loss)")
    init_generator: str = _option("", "model file to start from; the gan stage needs a pretrained generator")
    scale: int = _option(4, "upscaling factor: 2, 4 or 8", choices=SUPPORTED_SCALES)
    blocks: int = _option(16, "residual blocks in the generator", low=1, high=MAX_BLOCKS)
    channels: int = _option(64, "feature channels in the generator", low=1, high=MAX_CHANNELS)
    batchnorm: bool = _option(True, "BatchNorm in the residual blocks, as in the paper")
    lr_dir: str = _option(
        "", "folder of LR images paired by name with the photos (HR); empty: LR by bicubic downscaling"
    )
    hr_crop: int = _option(96, "side of the random high-resolution crops, in pixels", low=8, high=4096)
    batch_size: int = _option(16, "crops per step", low=1, high=4096)
    steps: int = _option(100_000, "optimizer steps in all", low=1, high=_LARGEST_COUNT)
    learning_rate: float = _option(1e-4, "Adam learning rate (generator and discriminator)", low=0, high=1)
    lr_drop_step: int = _option(
        0,
        "step after which the learning rate is divided by 10 (the paper: 1e-4, then 1e-5); 0: never",
        low=0,
        high=_LARGEST_COUNT,
    )
    warmup_steps: int = _option(
        0,
        "steps over which the learning rate rises linearly from near 0, which keeps Adam's first steps small",
        low=0,
        high=_LARGEST_COUNT,
    )
    pixel_loss: PixelLoss = _option(PixelLoss.MSE, "mse or l1")
    pixel_weight: float = _option(
        0.0, "gan stage: weight of an RGB pixel term next to the VGG loss, against colour drift", low=0, high=1e6
    )
    vgg_weights: str = _option(
        "", "gan stage: torchvision VGG19 weights (vgg19-dcbb9e9d.pth); default: the torch hub cache"
    )
    feature_scale: float = _option(
        1 / 12.75, "gan stage: factor applied to the conv5_4 features before their MSE", above=0, high=1e6
    )
    adversarial: Adversarial = _option(
        Adversarial.BCE, "gan stage: bce (the paper's), ragan (relativistic average) or wgan-gp"
    )
    adversarial_weight: float = _option(1e-3, "gan stage: weight of the adversarial loss", low=0, high=1e6)
    gp_weight: float = _option(10.0, "wgan-gp: weight of the gradient penalty", low=0, high=1e6)
    ema_decay: float = _option(
        0.999, "decay of the generator's exponential moving average; 0 disables it", low=0, below=1
    )
    grad_clip: float = _option(1.0, "largest gradient norm; 0 disables clipping", low=0, high=1e6)
    seed: int = _option(0, "seed for weights, crops and the hold-out split", low=0, high=2**63 - 1)
    precision: Precision = _option(
        Precision.AUTO,
        "auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16 (CUDA, loss-scaled); autocast, losses in fp32",
    )
    device: str = _option("auto", "auto, cpu, cuda or cuda:N")
    max_side: int = _option(
        2048,
        "photos with a longer side are downscaled to it before cropping; 0 keeps them",
        low=0,
        high=1 << 16,
    )
    holdout: int = _option(
        4, "photos held out for validation when no validation folder is given", low=1, high=1_000_000
    )
    validation_crop: int = _option(
        384, "side of the centre crop of each held-out photo that is validated; 0: whole", low=0, high=1 << 16
    )
    checkpoint_every: int = _option(500, "steps between checkpoints", low=1, high=_LARGEST_COUNT)
    validate_every: int = _option(500, "steps between validations", low=1, high=_LARGEST_COUNT)

    def __post_init__(self) -> None:
        problems = []
        for item in fields(self):
            try:
                object.__setattr__(self, item.name, _checked(item, getattr(self, item.name)))
            except ValueError as problem:
                problems.append(str(problem))
        if not problems:
            problems = self._inconsistencies()
        if problems:
            raise SettingsError("; ".join(problems))

    def _inconsistencies(self) -> list[str]:
        problems = []
        if self.stage is Stage.GAN and not self.init_generator:
            problems.append("the gan stage starts from a pretrained generator: set init_generator (--init-generator)")
        if self.hr_crop % self.scale or self.hr_crop < 4 * self.scale:
            problems.append(f"hr_crop {self.hr_crop} must be a multiple of the scale and at least {4 * self.scale}")
        if self.max_side and self.max_side < self.hr_crop:
            problems.append(f"max_side {self.max_side} must be 0 or at least hr_crop ({self.hr_crop})")
        if self.validation_crop and self.validation_crop < 4 * self.scale:
            problems.append(f"validation_crop {self.validation_crop} must be 0 or at least {4 * self.scale}")
        return problems

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Each setting's one-line description."""
        return {item.name: item.metadata["description"] for item in fields(cls)}

    def to_toml(self) -> str:
        """The settings as a TOML document that `load_settings` reads back equal."""
        lines = []
        for item in fields(self):
            lines.append(f"# {item.metadata['description']}\n{item.name} = {_toml_value(getattr(self, item.name))}")
        return "\n".join(lines) + "\n"


@functools.cache
def _types() -> dict[str, Any]:
    return typing.get_type_hints(TrainSettings)


def _checked(item: dataclasses.Field, value: Any) -> Any:
    """`value` as the setting's type (a choice's name becomes its enum member), within its bounds.

    Raises ValueError with a one-line message naming the setting.
    """
    name, kind, bounds = item.name, _types()[item.name], item.metadata
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except (ValueError, TypeError):
            names = ", ".join(member.value for member in kind)
            raise ValueError(f"{name} must be one of {names}, not {_shown(value)}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{name} must be {kind.__name__}, not {_shown(value)}")
    if kind is str:
        if "\0" in value or not _is_utf8(value):
            raise ValueError(f"{name} {_shown(value)} holds characters a settings file cannot keep (NUL or non-UTF-8)")
        return value
    if kind is float and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value}")
    if bounds.get("choices") is not None and value not in bounds["choices"]:
        raise ValueError(f"{name} must be one of {', '.join(map(str, bounds['choices']))}, not {value}")
    if not _within(value, bounds):
        raise ValueError(f"{name} must be {_bounds_text(bounds)}, not {value}")
    return value


def _within(value: float, bounds: dict[str, Any]) -> bool:
    return (
        (bounds.get("low") is None or value >= bounds["low"])
        and (bounds.get("high") is None or value <= bounds["high"])
        and (bounds.get("above") is None or value > bounds["above"])
        and (bounds.get("below") is None or value < bounds["below"])
    )


def _bounds_text(bounds: dict[str, Any]) -> str:
    parts = []
    if bounds.get("low") is not None:
        parts.append(f"at least {bounds['low']:g}")
    if bounds.get("above") is not None:
        parts.append(f"above {bounds['above']:g}")
    if bounds.get("high") is not None:
        parts.append(f"at most {bounds['high']:g}")
    if bounds.get("below") is not None:
        parts.append(f"below {bounds['below']:g}")
    return " and ".join(parts)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: a file name's undecodable bytes
        return False
    return True


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    """`text` as a TOML basic string: quotes, backslashes and control characters escaped.

    Everything else, non-ASCII included, is kept as is (TOML files are UTF-8). `text` must be
    encodable as UTF-8 (no lone surrogates).
    """
    escaped = (
        _TOML_ESCAPES.get(char) or (f"\\u{ord(char):04x}" if ord(char) < 0x20 or ord(char) == 0x7F else char)
        for char in text
    )
    return '"' + "".join(escaped) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return toml_string(value.value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)  # finite: checked on construction
    return toml_string(value)


def _read_toml(path: Path) -> dict[str, Any]:
    """The key-value pairs of a TOML file. Raises SettingsError, one line, when it cannot be read as TOML."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as error:
        raise SettingsError(f"{path}: cannot read the settings file ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{path}: not a settings file (not UTF-8 text); expected TOML: steps = 1000") from None
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as error:
        detail = (str(error).splitlines() or ["nested too deeply"])[0]
        raise SettingsError(f"{path}: not a valid TOML settings file ({detail})") from None


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> TrainSettings:
    """Settings from a TOML file (optional), then overrides (flags), over the defaults.

    Raises SettingsError for unreadable files, unknown keys, values of the wrong type and
    invalid values; the message names the file (or "flags") and every offending key.
    """
    values: dict[str, Any] = _read_toml(path) if path is not None else {}
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    source = path or "flags"
    known = {item.name for item in fields(TrainSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError(
            f"{source}: unknown setting(s) {', '.join(map(_shown, unknown))}; known: {', '.join(sorted(known))}"
        )
    try:
        return TrainSettings(**values)
    except SettingsError as error:
        raise SettingsError(f"{source}: {error}") from None
