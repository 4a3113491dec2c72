"""Model files: srgan's own (safetensors with metadata, or a PyTorch state dict of the same
network) first, then any architecture spandrel detects (engines/spandrel_models.py).

Model files come from strangers, so reading one is bounded and never executes code from it:
safetensors holds only tensors and strings, PyTorch files are read with
`torch.load(weights_only=True)` after refusing archives whose members could inflate and
TorchScript archives (whose loading runs their code), and an SRGAN network's size is read off
the tensors present and checked against `arch.MAX_BLOCKS` and `arch.MAX_CHANNELS` before
anything is allocated for it; spandrel only ever sees the tensors. Every problem is a one-line
`ModelFileError` naming the file.
"""

from __future__ import annotations

import functools
import json
import math
import pickle
import pickletools
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .arch import MAX_BLOCKS, MAX_CHANNELS, SUPPORTED_SCALES, GeneratorConfig, SRGANGenerator, fold_batchnorm
from .atomic import atomic_path
from .backends import Precision
from .descriptor import ModelDescriptor
from .digest import file_sha256
from .errors import ModelFileError, Setting
from .tiling import ModelGeometry

FORMAT_NAME = "srgan-generator"
FORMAT_VERSION = "1"
ARCH_NAME = "srgan"
# Metadata key for the measured bf16 cost in PSNR-Y dB (see ModelInfo.bf16_cost_db).
BF16_COST_KEY = "bf16_cost_db"
SAFETENSORS_SUFFIXES = (".safetensors",)
PYTORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
ONNX_SUFFIXES = (".onnx",)
MODEL_SUFFIXES = SAFETENSORS_SUFFIXES + PYTORCH_SUFFIXES + ONNX_SUFFIXES
_WRAPPER_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "generator", "model", "net")
_PREFIXES = ("module.", "netG.", "net_g.", "generator.")
# Checkpoints nest the state dict a level or two deep; a file may nest (or contain) itself forever.
_MAX_WRAPPER_DEPTH = 8
# Value ranges in use are [0, 1], [-1, 1], [0, 255] and [0, 65535]; far outside them, or nearly
# empty, a range only turns every pixel into noise or infinities.
_MAX_RANGE_MAGNITUDE = 1e6
_MIN_RANGE_SPAN = 1e-3
# Free-form training metadata is shown to users: this many entries of this many characters.
_MAX_TRAINING_ENTRIES = 64
_MAX_TRAINING_TEXT = 500
# torch.save writes this pickled magic number (after the protocol: b"\x80" and its number) first
# in its pre-1.6 format; zip archives, its format since, start with "PK".
_LEGACY_MAGIC = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


@dataclass(frozen=True)
class ModelInfo:
    """What an SRGAN generator file holds, read from its metadata and checked against its tensors.

    Training reads this (the generator's configuration and lineage); inference reads the
    architecture-neutral `ModelDescriptor` that `load_model` returns.

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
class WeightsFile:
    """The tensors and metadata of a model file, read safely but not yet checked against any architecture.

    tensors: name → CPU tensor, checkpoint wrappers and module prefixes removed. Shapes, dtypes
    and layouts are as stored: check them before computing with a tensor (a PyTorch file can
    describe a huge tensor over a few bytes of storage).
    metadata: the safetensors string metadata; empty for PyTorch files.
    file_format: "safetensors" or "pytorch".
    """

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    file_format: str


@dataclass(frozen=True)
class LoadedModel:
    """A model file ready for inference, of any architecture.

    info: what the core knows about it (architecture, geometry, precisions, hash, ...).
    network: eval-mode float32 CPU module mapping N×C×H×W in [0, 1] to
    N×C×(scale·H)×(scale·W) in [0, 1] (unclamped), C = info.channels (3, or 1 for gray models);
    None for ONNX files, which run through ONNX Runtime only (info.file_format "onnx").
    """

    info: ModelDescriptor
    network: nn.Module | None

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
    truncated, not a model file, needs code to load, of another architecture, larger than
    MAX_BLOCKS × MAX_CHANNELS, holds non-finite weights, or is inconsistent with its metadata.
    """
    path = Path(path)
    weights = read_weights(path)
    if weights.metadata.get("format", FORMAT_NAME) != FORMAT_NAME:
        raise ModelFileError(
            f"{path}: metadata says format {_shown(weights.metadata['format'])}, expected '{FORMAT_NAME}'"
        )
    return _srgan_generator(path, weights, _sha256(path))


def is_srgan_file(weights: WeightsFile) -> bool:
    """Whether a file claims to be, or is shaped like, srgan's own generator (checked fully on loading)."""
    if "format" in weights.metadata:
        return weights.metadata["format"] == FORMAT_NAME
    head = weights.tensors.get("head.0.weight")
    return head is not None and head.ndim == 4 and tuple(head.shape[1:]) == (3, 9, 9)


def _srgan_generator(path: Path, weights: WeightsFile, sha256: str) -> tuple[SRGANGenerator, ModelInfo]:
    config = _config_from_tensors(path, weights.tensors)
    _check_metadata(path, weights.metadata, config)
    input_range = _range(path, weights.metadata, "input_range")
    output_range = _range(path, weights.metadata, "output_range")
    tensors = _generator_tensors(path, weights.tensors, config)
    generator = SRGANGenerator(config)
    generator.load_state_dict(tensors, strict=False)
    info = ModelInfo(
        path=path,
        config=config,
        input_range=input_range,
        output_range=output_range,
        training=_training(weights.metadata),
        sha256=sha256,
        file_format=weights.file_format,
        bf16_cost_db=_bf16_cost(path, weights.metadata),
    )
    return generator, info


def load_model(path: Path) -> LoadedModel:
    """Read a model file (.safetensors, or a PyTorch state dict: .pth .pt .ckpt .bin) for inference.

    srgan's own generator first; any other file goes to spandrel (.onnx files to ONNX Runtime), which detects ESRGAN,
    Real-ESRGAN Compact, SPAN, SwinIR, DAT and the other architectures of its registry.
    Raises ModelFileError, naming the file and what was expected, when the file is missing,
    unreadable, would need code to load, or matches no architecture.
    """
    path = Path(path)
    if path.suffix.lower() in ONNX_SUFFIXES and path.is_file():
        from .onnx_models import describe_onnx

        return LoadedModel(info=describe_onnx(path), network=None)
    weights = read_weights(path)
    sha256 = _sha256(path)
    if not is_srgan_file(weights):
        from .spandrel_models import load_spandrel  # spandrel is imported only when a file needs it

        descriptor, network = load_spandrel(path, weights.tensors, sha256, weights.file_format)
        check_finite(path, network.state_dict(), "")
        return LoadedModel(info=descriptor, network=network)
    generator, info = _srgan_generator(path, weights, sha256)
    network: nn.Module = fold_batchnorm(generator.eval())
    check_finite(info.path, network.state_dict(), " once BatchNorm is folded in")
    if info.input_range != (0.0, 1.0) or info.output_range != (0.0, 1.0):
        network = RangeAdapter(network, info.input_range, info.output_range).eval()
    return LoadedModel(info=srgan_descriptor(info), network=network)


def srgan_descriptor(info: ModelInfo) -> ModelDescriptor:
    """The architecture-neutral description of an SRGAN generator file."""
    return ModelDescriptor(
        path=info.path,
        architecture="SRGAN",
        geometry=ModelGeometry(scale=info.config.scale, channels=3, overlap=16),
        precisions=frozenset({Precision.FP32, Precision.FP16, Precision.BF16}),
        purpose="SR",
        licence="MIT (this project)",
        sha256=info.sha256,
        file_format=info.file_format,
        tags=(f"{info.config.blocks}nb", f"{info.config.channels}nf"),
        details={
            "blocks": info.config.blocks,
            "features": info.config.channels,
            "batchnorm": info.config.batchnorm,
            "input_range": list(info.input_range),
            "output_range": list(info.output_range),
        },
        training=dict(info.training),
        bf16_cost_db=info.bf16_cost_db,
    )


def read_weights(path: Path) -> WeightsFile:
    """The tensors and metadata of a .safetensors or PyTorch (.pth .pt .ckpt .bin) file.

    Memory stays within about the file's size: safetensors tensors are backed by the file's
    bytes, and PyTorch archives whose members are compressed are refused before loading.
    Raises ModelFileError for a missing, unreadable, foreign or corrupt file and for a PyTorch
    file that needs code to load.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found; check the path", setting=Setting.MODEL)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        tensors, metadata = _read_safetensors(path)
        return WeightsFile(tensors, metadata, "safetensors")
    if suffix in PYTORCH_SUFFIXES:
        return WeightsFile(unwrap_state_dict(path, read_pytorch(path)), {}, "pytorch")
    raise ModelFileError(
        f"{path}: unknown model file type {suffix!r}; expected .safetensors or a PyTorch state dict (.pth, .pt)",
        setting=Setting.MODEL,
    )


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except OSError as error:
        raise _unreadable(path, error) from error
    except Exception as error:  # the parser's own error type, or a dtype torch lacks, on hostile bytes
        raise ModelFileError(
            f"{path}: not a readable safetensors file (truncated or corrupt: {_first_line(error)});"
            " re-download or re-export it"
        ) from error
    return tensors, metadata


def read_pytorch(path: Path) -> object:
    """The object a PyTorch file holds, read by torch's weights-only unpickler: no code runs.

    Raises ModelFileError saying what the file is when it cannot be loaded: not a PyTorch file,
    truncated or corrupt, a pickle that needs code, a TorchScript module, or an archive that
    could inflate in memory.
    """
    path = Path(path)
    if _is_torchscript(path):
        raise ModelFileError(
            f"{path}: refused to load: a TorchScript module runs its own code when loaded;"
            " expected a state dict (convert it where you trust it: torch.jit.load, then save the state_dict"
            " as .safetensors)"
        )
    if not _refuse_unbounded_formats(path):
        raise ModelFileError(_why_unloadable(path, None))
    try:
        with warnings.catch_warnings():
            # Its warnings about unusual pickle protocols are about the file, which fails or loads anyway.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        if error.errno is None:  # raised by the loader over the file's content, not by the system
            raise ModelFileError(_why_unloadable(path, error)) from error
        raise _unreadable(path, error) from error
    except Exception as error:  # hostile bytes reach KeyError, IndexError, AssertionError... in the unpickler
        raise ModelFileError(_why_unloadable(path, error)) from error


def _is_torchscript(path: Path) -> bool:
    """A zip archive with a code/ folder is TorchScript; torch.load would hand it to torch.jit.load."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())
    except Exception:  # noqa: BLE001 - a damaged archive is not TorchScript; the bounded reader names the damage
        return False


def _refuse_unbounded_formats(path: Path) -> bool:
    """Refuse the PyTorch containers whose loading takes more memory than the file's size.

    torch.save stores archive members uncompressed, but torch.load also inflates compressed
    ones: a 1 MB archive can hold a 1 GB storage. PyTorch 0.x tar files extract storages
    to disk first, where a sparse member is as large as it claims. Returns False for a file
    that is no PyTorch format at all, which is then not given to torch.load.
    """
    try:
        with open(path, "rb") as stream:
            head = stream.read(512)
    except OSError as error:
        raise _unreadable(path, error) from error
    if head[257:262] == b"ustar":
        raise ModelFileError(
            f"{path}: a PyTorch 0.x tar file, which srgan does not read; re-save it with a current PyTorch"
            " or convert it to safetensors"
        )
    if _is_legacy(head):
        return True
    if not head.startswith(b"PK"):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            compressed = [item.filename for item in archive.infolist() if item.compress_type != zipfile.ZIP_STORED]
    except Exception as error:  # zipfile raises several types on hostile central directories
        raise ModelFileError(
            f"{path}: not a loadable PyTorch file (truncated or corrupt archive: {_first_line(error)});"
            " re-download or re-export it"
        ) from error
    if compressed:
        raise ModelFileError(
            f"{path}: PyTorch archive with compressed member {_shown(compressed[0])}, which torch.save never"
            " writes and which could inflate without bound; re-save it with torch.save or convert it to safetensors"
        )
    return True


def _is_legacy(head: bytes) -> bool:
    return head[:1] == b"\x80" and head[2 : 2 + len(_LEGACY_MAGIC)] == _LEGACY_MAGIC


def _why_unloadable(path: Path, error: BaseException | None) -> str:
    """One line saying what a file that is not a loadable PyTorch file is (error: torch.load's, if it ran)."""
    needed = _code_named(str(error)) if isinstance(error, pickle.UnpicklingError) else None
    try:
        with open(path, "rb") as stream:
            head = stream.read(16)
    except OSError:
        head = b""
    torch_format = head.startswith(b"PK") or _is_legacy(head)
    if needed is None and not torch_format:
        needed = _pickle_global(path)
    if needed is not None:
        return (
            f"{path}: a pickle that needs code to load ({_shown(needed)}), which srgan never runs;"
            " convert it to safetensors where it came from"
        )
    if torch_format:
        return (
            f"{path}: not a loadable PyTorch file (truncated or corrupt: {_first_line(error or EOFError())});"
            " re-download or re-export it"
        )
    return f"{path}: is not a PyTorch model file; expected a state dict written by torch.save or a .safetensors file"


def _code_named(message: str) -> str | None:
    """The class or function a weights-only unpickler error says the file needs, if it says one."""
    match = re.search(r"GLOBAL (\S+)|unrecognized function (.+?)(?: which|$)|but got (.+?)$", message, re.MULTILINE)
    return next((group for group in match.groups() if group), None) if match else None


def _pickle_global(path: Path, max_operations: int = 1_000_000) -> str | None:
    """The first class or function a raw pickle would import, read without unpickling it."""
    strings: list[str] = []
    try:
        with open(path, "rb") as stream:
            for count, (opcode, argument, _) in enumerate(pickletools.genops(stream)):
                if opcode.name in ("GLOBAL", "INST"):
                    return str(argument).replace(" ", ".")
                if opcode.name == "STACK_GLOBAL":
                    return ".".join(strings[-2:])
                if isinstance(argument, str):
                    strings.append(argument)
                if count >= max_operations:
                    break
    except Exception:  # noqa: BLE001  (not a pickle, or one that ends early: it then imports nothing more)
        return None
    return None


def unwrap_state_dict(path: Path, loaded: object) -> dict[str, torch.Tensor]:
    """Find the generator's tensors in a checkpoint: wrapper keys, then module/netG prefixes.

    Follows at most _MAX_WRAPPER_DEPTH wrappers and never the same one twice, so a dict that
    contains itself ends the search. Raises ModelFileError when no dict of named tensors is found.
    """
    seen: set[int] = set()
    for _ in range(_MAX_WRAPPER_DEPTH):
        if not isinstance(loaded, dict) or _is_tensor_dict(loaded) or id(loaded) in seen:
            break
        seen.add(id(loaded))
        inner = next((loaded[key] for key in _WRAPPER_KEYS if isinstance(loaded.get(key), dict)), None)
        if inner is None and len(loaded) == 1 and isinstance(next(iter(loaded.values())), dict):
            inner = next(iter(loaded.values()))
        if inner is None:
            break
        loaded = inner
    if not isinstance(loaded, dict) or not _is_tensor_dict(loaded):
        raise ModelFileError(
            f"{path}: no state dict of tensors found; expected a generator state dict or a checkpoint holding one"
        )
    tensors: dict[str, torch.Tensor] = {}
    for name, value in loaded.items():
        if not isinstance(name, str):
            raise ModelFileError(f"{path}: a tensor is named {_shown(repr(name))}; state dict names are strings")
        while name.startswith(_PREFIXES):
            name = name.split(".", 1)[1]
        if name in tensors:
            raise ModelFileError(f"{path}: two tensors named {_shown(name)} once module prefixes are removed")
        tensors[name] = value
    return tensors


def _is_tensor_dict(candidate: dict) -> bool:
    return bool(candidate) and all(isinstance(value, torch.Tensor) for value in candidate.values())


def _config_from_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Read the architecture off tensor names and shapes, within MAX_BLOCKS and MAX_CHANNELS."""
    head = tensors.get("head.0.weight")
    if head is None or head.ndim != 4 or tuple(head.shape[1:]) != (3, 9, 9):
        raise ModelFileError(
            f"{path}: not an SRGAN generator (no 9×9 RGB head convolution 'head.0.weight');"
            " expected a model saved by srgan or a state dict of the same architecture"
        )
    channels = head.shape[0]
    if not 1 <= channels <= MAX_CHANNELS:
        raise ModelFileError(f"{path}: the head has {channels} channels; srgan loads generators of 1 to {MAX_CHANNELS}")
    blocks = _numbered(path, tensors, "body", r"body\.(\d+)\.conv1\.weight", MAX_BLOCKS)
    stages = _numbered(path, tensors, "upsample", r"upsample\.(\d+)\.0\.weight", len(SUPPORTED_SCALES))
    if blocks < 1 or stages < 1:
        raise ModelFileError(
            f"{path}: SRGAN generator with {blocks} residual blocks and {stages} upsampling stages;"
            f" expected at least one block and a scale in {SUPPORTED_SCALES}"
        )
    batchnorm = "body.0.bn1.weight" in tensors
    return GeneratorConfig(scale=2**stages, blocks=blocks, channels=channels, batchnorm=batchnorm)


def _numbered(path: Path, tensors: dict[str, torch.Tensor], part: str, pattern: str, limit: int) -> int:
    """How many numbered layers `part` has; their numbers must run 0, 1, ... up to at most `limit` - 1."""
    numbers = {match.group(1) for name in tensors if (match := re.fullmatch(pattern, name))}
    beyond = [number for number in numbers if len(number) > 4 or int(number) >= limit or number != str(int(number))]
    if beyond:
        raise ModelFileError(
            f"{path}: layer {part}.{_shown(max(beyond, key=len), bare=True)} is out of range;"
            f" srgan loads {part} layers numbered 0 to {limit - 1}"
        )
    indices = sorted(int(number) for number in numbers)
    if indices != list(range(len(indices))):
        gap = next(index for position, index in enumerate(indices) if index != position)
        raise ModelFileError(
            f"{path}: {part} layers are numbered {indices[:4]}...; expected 0, 1, ... without gaps (no {gap - 1})"
        )
    return len(indices)


@functools.lru_cache(maxsize=8)
def _expected_shapes(config: GeneratorConfig) -> dict[str, torch.Size]:
    """The generator's tensor shapes, from a copy built on the meta device: no memory is allocated."""
    with torch.device("meta"):
        generator = SRGANGenerator(config)
    return {
        name: value.shape for name, value in generator.state_dict().items() if not name.endswith("num_batches_tracked")
    }


def _generator_tensors(
    path: Path, tensors: dict[str, torch.Tensor], config: GeneratorConfig
) -> dict[str, torch.Tensor]:
    """The file's tensors as float32, once names, shapes, dtypes and values are checked.

    Everything a tensor claims is checked before any arithmetic on it.
    """
    expected = _expected_shapes(config)
    given = {name: value for name, value in tensors.items() if not name.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {[_shown(name) for name in unexpected[:3]]}"
        raise ModelFileError(f"{path}: tensors do not match an SRGAN generator ({detail}); expected {config}")
    for name, value in given.items():
        if value.layout != torch.strided or value.is_quantized or value.device.type != "cpu":
            raise ModelFileError(f"{path}: tensor '{name}' is not a plain dense tensor; expected float weights")
        if value.shape != expected[name]:
            raise ModelFileError(
                f"{path}: tensor '{name}' has shape {tuple(value.shape)}, expected {tuple(expected[name])}"
            )
        if not value.is_floating_point():
            raise ModelFileError(f"{path}: tensor '{name}' is {value.dtype}, expected floating point weights")
    result = {name: value.float() for name, value in given.items()}
    check_finite(path, result)
    for name, value in result.items():
        if name.endswith("running_var") and bool((value < 0).any()):
            raise ModelFileError(f"{path}: tensor '{name}' holds negative variances; the file is damaged")
    return result


def check_finite(path: Path, tensors: dict[str, torch.Tensor], when: str = "") -> None:
    """Raise ModelFileError naming the first floating-point tensor that holds NaN or infinity.

    Such weights make every output pixel NaN, which encodes as a black image.
    """
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelFileError(
                f"{path}: tensor '{name}' holds NaN or infinite values{when};"
                " the file is damaged or was saved from a diverged training run"
            )


def _check_metadata(path: Path, metadata: dict[str, str], config: GeneratorConfig) -> None:
    for key in ("scale", "blocks", "channels"):
        if key in metadata and metadata[key] != str(getattr(config, key)):
            raise ModelFileError(
                f"{path}: metadata says {key}={_shown(metadata[key], bare=True)} but the tensors have"
                f" {key}={getattr(config, key)}; the file is inconsistent, re-export it"
            )
    if metadata.get("arch", ARCH_NAME) != ARCH_NAME:
        raise ModelFileError(f"{path}: metadata says architecture {_shown(metadata['arch'])}, expected '{ARCH_NAME}'")


def _range(path: Path, metadata: dict[str, str], key: str) -> tuple[float, float]:
    """A value range from the metadata: finite, ordered, not vanishingly narrow, of sane magnitude."""
    if key not in metadata:
        return (0.0, 1.0)
    try:
        low, high = (float(value) for value in _json(metadata[key]))
    except (ValueError, TypeError, OverflowError):
        raise ModelFileError(f"{path}: metadata {key}={_shown(metadata[key])} is not a [low, high] pair") from None
    if not (
        math.isfinite(low)
        and math.isfinite(high)
        and max(abs(low), abs(high)) <= _MAX_RANGE_MAGNITUDE
        and high - low >= _MIN_RANGE_SPAN
    ):
        raise ModelFileError(
            f"{path}: metadata {key}={_shown(metadata[key])} is not a usable value range;"
            " expected finite low < high such as [0, 1], [-1, 1] or [0, 255]"
        )
    return (low, high)


def _bf16_cost(path: Path, metadata: dict[str, str]) -> float | None:
    if BF16_COST_KEY not in metadata:
        return None
    try:
        return float(metadata[BF16_COST_KEY])
    except ValueError:
        raise ModelFileError(f"{path}: metadata {BF16_COST_KEY}={metadata[BF16_COST_KEY]!r} is not a number") from None


def _training(metadata: dict[str, str]) -> dict[str, str]:
    """The free-form training summary, made safe to print: bounded, control characters escaped."""
    if "training" not in metadata:
        return {}
    summary = _json(metadata["training"])
    if summary is None:
        return {"note": _printable(metadata["training"])}
    if not isinstance(summary, dict):
        return {}
    return {
        _printable(str(key)): _printable(value if isinstance(value, str) else _text(value))
        for key, value in list(summary.items())[:_MAX_TRAINING_ENTRIES]
    }


def _json(text: str) -> object:
    """Parsed JSON, or None for text that is not JSON (or nests too deeply to parse)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _text(value: object) -> str:
    try:
        return json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        return "?"


def _printable(text: str) -> str:
    """At most _MAX_TRAINING_TEXT characters with no terminal control sequences left in them."""
    escaped = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text[: _MAX_TRAINING_TEXT + 1])
    return escaped if len(escaped) <= _MAX_TRAINING_TEXT else escaped[:_MAX_TRAINING_TEXT] + "…"


def _shown(text: str, bare: bool = False) -> str:
    """A value from the file as it may appear in a one-line message: quoted, escaped, short.

    bare: leave a short plain number unquoted.
    """
    if bare and text.isascii() and text.isdigit() and len(text) <= 12:
        return text
    return repr(text[:80] + ("…" if len(text) > 80 else ""))


def _sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as error:
        raise _unreadable(path, error) from error


def _unreadable(path: Path, error: OSError) -> ModelFileError:
    return ModelFileError(f"{path}: cannot read the model file ({error.strerror or _first_line(error)})")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:160] if text else type(error).__name__
