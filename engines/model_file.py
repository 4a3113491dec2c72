"""Model files: safetensors with metadata, and plain PyTorch state dicts of the same networks.

Loading never executes code from the file: safetensors holds only tensors and strings, and
PyTorch files are read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .arch import SUPPORTED_SCALES, GeneratorConfig, SRGANGenerator, fold_batchnorm
from .atomic import atomic_path
from .digest import file_sha256
from .errors import ModelFileError, Setting

FORMAT_NAME = "srgan-generator"
FORMAT_VERSION = "1"
ARCH_NAME = "srgan"
# Metadata key for the measured bf16 cost in PSNR-Y dB (see ModelInfo.bf16_cost_db).
BF16_COST_KEY = "bf16_cost_db"
SAFETENSORS_SUFFIXES = (".safetensors",)
PYTORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "generator", "model")
_PREFIXES = ("module.", "netG.", "net_g.", "generator.")


@dataclass(frozen=True)
class ModelInfo:
    """What a model file holds, read from its metadata and checked against its tensors.

    input_range / output_range: the value ranges the network was trained on; inference maps
    them to and from [0, 1]. training: a short free-form summary (dataset, steps, PSNR, ...).
    sha256: hex digest of the file's bytes, for caches keyed on the exact weights.
    bf16_cost_db: PSNR-Y (dB) the model loses in bf16 against fp32 on the held-out crops, as
    recorded in the file by benchmarks/precision_quality.py --record; None when never measured.
    """

    path: Path
    config: GeneratorConfig
    input_range: tuple[float, float] = (0.0, 1.0)
    output_range: tuple[float, float] = (0.0, 1.0)
    training: dict[str, str] = field(default_factory=dict)
    sha256: str = ""
    file_format: str = "safetensors"
    bf16_cost_db: float | None = None

    @property
    def scale(self) -> int:
        return self.config.scale

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary for `srgan models` and `srgan info`."""
        return {
            "path": str(self.path),
            "format": self.file_format,
            "arch": ARCH_NAME,
            "scale": self.config.scale,
            "blocks": self.config.blocks,
            "channels": self.config.channels,
            "batchnorm": self.config.batchnorm,
            "input_range": list(self.input_range),
            "output_range": list(self.output_range),
            "training": dict(self.training),
            "sha256": self.sha256,
            "bf16_cost_db": self.bf16_cost_db,
        }


@dataclass(frozen=True)
class LoadedModel:
    """A model file ready for inference.

    network: eval-mode float32 CPU module mapping N×3×H×W in [0, 1] to
    N×3×(scale·H)×(scale·W) in [0, 1] (unclamped), BatchNorm folded in.
    """

    info: ModelInfo
    network: nn.Module

    @property
    def scale(self) -> int:
        return self.info.scale


class RangeAdapter(nn.Module):
    """Wraps a network trained on other value ranges so that it reads and writes [0, 1]."""

    def __init__(self, network: nn.Module, input_range: tuple[float, float], output_range: tuple[float, float]):
        super().__init__()
        self.network = network
        self.input_low, self.input_span = input_range[0], input_range[1] - input_range[0]
        self.output_low, self.output_span = output_range[0], output_range[1] - output_range[0]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        result = self.network(image * self.input_span + self.input_low)
        return (result - self.output_low) / self.output_span


def save_model(
    path: Path,
    generator: SRGANGenerator,
    training: dict[str, str] | None = None,
    half: bool = False,
    input_range: tuple[float, float] = (0.0, 1.0),
    output_range: tuple[float, float] = (0.0, 1.0),
) -> None:
    """Write a generator's weights and metadata as safetensors, atomically.

    half: store float16 tensors (half the size; loading converts back to float32).
    Raises ModelFileError when the folder cannot be written.
    """
    config = generator.config
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "arch": ARCH_NAME,
        "scale": str(config.scale),
        "blocks": str(config.blocks),
        "channels": str(config.channels),
        "batchnorm": str(config.batchnorm).lower(),
        "input_range": json.dumps(list(input_range)),
        "output_range": json.dumps(list(output_range)),
        "training": json.dumps(training or {}),
    }
    dtype = torch.float16 if half else torch.float32
    tensors = {
        name: (value.to(dtype) if value.is_floating_point() else value).contiguous()
        for name, value in generator.state_dict().items()
        if not name.endswith("num_batches_tracked")
    }
    path = Path(path)
    try:
        with atomic_path(path) as temporary:
            save_file(tensors, temporary, metadata=metadata)
    except OSError as error:
        raise ModelFileError(
            f"{path}: cannot write the model file ({error.strerror}); choose a writable folder"
        ) from error


def record_bf16_cost(path: Path, cost_db: float) -> None:
    """Record in a safetensors model file's metadata what bf16 costs it (PSNR-Y dB, fp32 minus bf16).

    Tensors and other metadata are kept; the file is rewritten atomically, so its SHA-256 (and
    with it every engine cache key) changes. Raises ModelFileError for other file types or when
    the file cannot be read or written.
    """
    path = Path(path)
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise ModelFileError(f"{path}: only safetensors files carry metadata; convert the file first")
    tensors, metadata = _read_safetensors(path)
    try:
        with atomic_path(path) as temporary:
            save_file(tensors, temporary, metadata={**metadata, BF16_COST_KEY: f"{cost_db:.4f}"})
    except OSError as error:
        raise ModelFileError(f"{path}: cannot rewrite the model file ({error.strerror})") from error


def load_generator(path: Path) -> tuple[SRGANGenerator, ModelInfo]:
    """The generator in its training form (BatchNorm not folded), with the file's metadata.

    Raises ModelFileError, naming the file and what was expected, when the file is missing,
    truncated, not a model file, of another architecture, or inconsistent with its metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found; check the path", setting=Setting.MODEL)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        tensors, metadata = _read_safetensors(path)
        file_format = "safetensors"
    elif path.suffix.lower() in PYTORCH_SUFFIXES:
        tensors, metadata, file_format = _read_pytorch(path), {}, "pytorch"
    else:
        raise ModelFileError(
            f"{path}: unknown model file type '{path.suffix}';"
            " expected .safetensors or a PyTorch state dict (.pth, .pt)"
        )
    config = _config_from_tensors(path, tensors)
    _check_metadata(path, metadata, config)
    generator = SRGANGenerator(config)
    _load_state(path, generator, tensors)
    info = ModelInfo(
        path=path,
        config=config,
        input_range=_range(path, metadata, "input_range"),
        output_range=_range(path, metadata, "output_range"),
        training=_training(metadata),
        sha256=file_sha256(path),
        file_format=file_format,
        bf16_cost_db=_bf16_cost(path, metadata),
    )
    return generator, info


def load_model(path: Path) -> LoadedModel:
    """Read a model file (.safetensors, or a PyTorch state dict: .pth .pt .ckpt .bin) for inference.

    Raises ModelFileError as `load_generator` does.
    """
    generator, info = load_generator(path)
    network: nn.Module = fold_batchnorm(generator.eval())
    if info.input_range != (0.0, 1.0) or info.output_range != (0.0, 1.0):
        network = RangeAdapter(network, info.input_range, info.output_range).eval()
    return LoadedModel(info=info, network=network)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        tensors = load_file(path)
        with open(path, "rb") as stream:
            header_length = int.from_bytes(stream.read(8), "little")
            header = json.loads(stream.read(header_length))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as error:
        raise ModelFileError(
            f"{path}: not a readable safetensors file (truncated or corrupt: {_first_line(error)});"
            " re-download or re-export it"
        ) from error
    metadata = header.get("__metadata__") or {}
    if metadata.get("format", FORMAT_NAME) != FORMAT_NAME:
        raise ModelFileError(f"{path}: metadata says format '{metadata['format']}', expected '{FORMAT_NAME}'")
    return tensors, metadata


def _read_pytorch(path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" in str(error).lower():
            raise ModelFileError(
                f"{path}: refused to load: it holds Python objects other than tensors, whose loading could run code;"
                " expected a plain state dict (export one with torch.save(model.state_dict(), path))"
            ) from error
        raise ModelFileError(
            f"{path}: not a loadable PyTorch weights file (truncated or corrupt); expected a plain state dict"
        ) from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise ModelFileError(
            f"{path}: not a loadable PyTorch weights file (truncated or corrupt: {_first_line(error)});"
            " expected a plain state dict"
        ) from error
    return _unwrap_state_dict(path, loaded)


def _unwrap_state_dict(path: Path, loaded: object) -> dict[str, torch.Tensor]:
    """Find the generator's tensors in a checkpoint: wrapper keys, then module/netG prefixes."""
    while isinstance(loaded, dict) and not _is_tensor_dict(loaded):
        inner = next((loaded[key] for key in _WRAPPER_KEYS if isinstance(loaded.get(key), dict)), None)
        if inner is None:
            break
        loaded = inner
    if not isinstance(loaded, dict) or not _is_tensor_dict(loaded):
        raise ModelFileError(
            f"{path}: no state dict of tensors found; expected a generator state dict or a checkpoint holding one"
        )
    tensors = {}
    for name, value in loaded.items():
        while name.startswith(_PREFIXES):
            name = name.split(".", 1)[1]
        tensors[name] = value
    return tensors


def _is_tensor_dict(candidate: dict) -> bool:
    return bool(candidate) and all(isinstance(value, torch.Tensor) for value in candidate.values())


def _config_from_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Read the architecture off tensor names and shapes."""
    head = tensors.get("head.0.weight")
    if head is None or head.ndim != 4 or tuple(head.shape[1:]) != (3, 9, 9):
        raise ModelFileError(
            f"{path}: not an SRGAN generator (no 9×9 RGB head convolution 'head.0.weight');"
            " expected a model saved by srgan or a state dict of the same architecture"
        )
    blocks = _count(tensors, r"body\.(\d+)\.conv1\.weight")
    stages = _count(tensors, r"upsample\.(\d+)\.0\.weight")
    scale = 2**stages
    if blocks < 1 or scale not in SUPPORTED_SCALES:
        raise ModelFileError(
            f"{path}: SRGAN generator with {blocks} residual blocks and {stages} upsampling stages;"
            f" expected at least one block and a scale in {SUPPORTED_SCALES}"
        )
    batchnorm = "body.0.bn1.weight" in tensors
    return GeneratorConfig(scale=scale, blocks=blocks, channels=head.shape[0], batchnorm=batchnorm)


def _count(tensors: dict[str, torch.Tensor], pattern: str) -> int:
    indices = {int(match.group(1)) for name in tensors if (match := re.fullmatch(pattern, name))}
    return max(indices) + 1 if indices else 0


def _check_metadata(path: Path, metadata: dict[str, str], config: GeneratorConfig) -> None:
    for key in ("scale", "blocks", "channels"):
        if key in metadata and metadata[key] != str(getattr(config, key)):
            raise ModelFileError(
                f"{path}: metadata says {key}={metadata[key]} but the tensors have {key}={getattr(config, key)};"
                " the file is inconsistent, re-export it"
            )
    if metadata.get("arch", ARCH_NAME) != ARCH_NAME:
        raise ModelFileError(f"{path}: metadata says architecture '{metadata['arch']}', expected '{ARCH_NAME}'")


def _load_state(path: Path, generator: SRGANGenerator, tensors: dict[str, torch.Tensor]) -> None:
    expected = {
        name: value for name, value in generator.state_dict().items() if not name.endswith("num_batches_tracked")
    }
    given = {name: value for name, value in tensors.items() if not name.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelFileError(f"{path}: tensors do not match an SRGAN generator ({detail}); expected {generator.config}")
    for name, value in given.items():
        if value.shape != expected[name].shape:
            raise ModelFileError(
                f"{path}: tensor '{name}' has shape {tuple(value.shape)}, expected {tuple(expected[name].shape)}"
            )
        if not value.is_floating_point():
            raise ModelFileError(f"{path}: tensor '{name}' is {value.dtype}, expected floating point weights")
    generator.load_state_dict({name: value.float() for name, value in given.items()}, strict=False)


def _range(path: Path, metadata: dict[str, str], key: str) -> tuple[float, float]:
    if key not in metadata:
        return (0.0, 1.0)
    try:
        low, high = (float(value) for value in json.loads(metadata[key]))
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: metadata {key}={metadata[key]!r} is not a [low, high] pair") from None
    if not high > low:
        raise ModelFileError(f"{path}: metadata {key}={metadata[key]!r} is empty; expected low < high")
    return (low, high)


def _bf16_cost(path: Path, metadata: dict[str, str]) -> float | None:
    if BF16_COST_KEY not in metadata:
        return None
    try:
        return float(metadata[BF16_COST_KEY])
    except ValueError:
        raise ModelFileError(f"{path}: metadata {BF16_COST_KEY}={metadata[BF16_COST_KEY]!r} is not a number") from None


def _training(metadata: dict[str, str]) -> dict[str, str]:
    try:
        summary = json.loads(metadata.get("training", "{}"))
    except json.JSONDecodeError:
        return {"note": metadata["training"]}
    return {str(key): str(value) for key, value in summary.items()} if isinstance(summary, dict) else {}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:160] if text else type(error).__name__
