"""The community's architectures (ESRGAN, Real-ESRGAN Compact, SPAN, SwinIR, DAT, ...) through spandrel.

`model_file` reads every file with its own safe reader and hands the tensors here only when they
are not an SRGAN generator; spandrel then detects the architecture from tensor names and shapes
and builds the network. Nothing here reads a file, so nothing here can run code from one.
"""

from __future__ import annotations

import enum
import functools
import importlib
import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .backends import Precision
from .descriptor import ModelDescriptor
from .tiling import ModelGeometry, SizeRequirements, Tiling
from .errors import ModelFileError

# Context in input pixels that keeps tiled output within one 8-bit level of whole-image output
# for each architecture at its usual sizes (tests/engines/test_spandrel_models.py measures it on
# small models; the Compact value is computed from its depth instead). Transformers see a whole
# attention window, so they get more; their seams are measured, not bounded (README).
_OVERLAP = {"ESRGAN": 32, "SPAN": 24, "SwinIR": 48, "DAT": 48, "HAT": 48, "ATD": 48, "RealPLKSR": 48, "OmniSR": 48}
_DEFAULT_OVERLAP = 32

# Architectures whose networks `torch.export` traces (checked by tests); others are refused for
# compiled engines with a reason rather than tried, because a failed export can take minutes.
_EXPORTABLE = frozenset({"ESRGAN", "Compact", "SPAN"})

# The licence of the architecture's reference code, where it is well known. The weights in a
# file carry their own licence, which spandrel cannot know.
_CODE_LICENCE = {
    "ESRGAN": "Apache-2.0 (architecture code)",
    "Compact": "BSD-3-Clause (architecture code)",
    "SwinIR": "Apache-2.0 (architecture code)",
}


class SpandrelNetwork(nn.Module):
    """A spandrel model as a plain module: N×C×h×w in [0, 1] to N×C×(s·h)×(s·w), unclamped.

    Calls the model the way spandrel's descriptor does (some architectures normalise their input
    first), without the descriptor's padding, which the tiler does per window.
    """

    def __init__(self, model: nn.Module, call: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self._call = call

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self._call(self.model, image)


def load_spandrel(path: Path, tensors: dict[str, torch.Tensor], sha256: str, file_format: str):
    """Build a network from a state dict that spandrel's registry detects.

    Returns (ModelDescriptor, SpandrelNetwork in eval mode, float32, on the CPU).
    Raises ModelFileError naming the file when no architecture matches, the tensors do not fit
    the detected one, or the model is not an image-to-image model srgan can tile.
    """
    spandrel = spandrel_module()
    try:
        loaded = spandrel.ModelLoader(device="cpu").load_from_state_dict(tensors)
    except spandrel.UnsupportedModelError:
        raise ModelFileError(
            f"{path}: not an SRGAN generator, and no architecture spandrel {spandrel.__version__} knows matches its"
            " tensors; expected a super-resolution or restoration model (ESRGAN, Real-ESRGAN Compact, SPAN, SwinIR,"
            " DAT, ...)"
        ) from None
    except Exception as error:  # noqa: BLE001 - spandrel raises anything from KeyError to RuntimeError
        raise ModelFileError(
            f"{path}: looks like a model spandrel knows, but its tensors do not build one ({_first_line(error)});"
            " the file may be truncated or of a variant spandrel does not support"
        ) from error
    architecture = loaded.architecture.id
    _check_usable(path, loaded, spandrel)
    requirements = loaded.size_requirements
    geometry = ModelGeometry(
        scale=loaded.scale,
        channels=loaded.input_channels,
        size_requirements=SizeRequirements(requirements.minimum, requirements.multiple_of, requirements.square),
        overlap=_overlap(architecture, tensors),
        tiling=Tiling[loaded.tiling.name],
    )
    precisions = {Precision.FP32}
    if loaded.supports_half:
        precisions.add(Precision.FP16)
    if loaded.supports_bfloat16:
        precisions.add(Precision.BF16)
    descriptor = ModelDescriptor(
        path=path,
        architecture=architecture,
        geometry=geometry,
        precisions=frozenset(precisions),
        purpose=loaded.purpose,
        licence=_CODE_LICENCE.get(architecture, ""),
        export_refusal=None
        if architecture in _EXPORTABLE
        else f"compiled engines are built for ESRGAN, Compact, SPAN and SRGAN models, not {architecture}",
        sha256=sha256,
        file_format=file_format,
        tags=tuple(loaded.tags),
        details={"loader": f"spandrel {spandrel.__version__}"},
    )
    call = getattr(loaded, "_call_fn", None) or _plain_call
    network = SpandrelNetwork(_fuse_reparameterised(loaded.model.float().cpu().eval()), call).eval()
    return descriptor, network


def _fuse_reparameterised(model: nn.Module) -> nn.Module:
    """Replace re-parameterisable blocks (SPAN's Conv3XC) by the one convolution they compute in eval mode.

    Such a block recomputes its fused kernel on every eval-mode call, which costs time on every
    tile and assigns tensors during `torch.export` tracing; the fused convolution gives the same
    output.
    """
    for name, child in list(model.named_children()):
        if isinstance(getattr(child, "eval_conv", None), nn.Conv2d) and callable(getattr(child, "update_params", None)):
            with torch.no_grad():
                child.update_params()
            setattr(model, name, child.eval_conv)
        else:
            _fuse_reparameterised(child)
    return model


def _plain_call(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    return model(image)


def _check_usable(path: Path, loaded, spandrel) -> None:
    name = loaded.architecture.name
    if not isinstance(loaded, spandrel.ImageModelDescriptor):
        raise ModelFileError(f"{path}: a {name} inpainting model needs a mask as well as an image; srgan cannot run it")
    if loaded.purpose == "FaceSR":
        raise ModelFileError(
            f"{path}: {name} restores aligned face crops, not whole images; srgan does not detect faces"
        )
    channels = (loaded.input_channels, loaded.output_channels)
    if channels not in ((3, 3), (1, 1)):
        raise ModelFileError(
            f"{path}: this {name} model maps {channels[0]} channels to {channels[1]};"
            " srgan runs RGB (3 to 3) and gray (1 to 1) models"
        )


def _overlap(architecture: str, tensors: dict[str, torch.Tensor]) -> int:
    if architecture == "Compact":
        # A plain stack of 3×3 convolutions: the receptive-field radius is its depth, and the
        # blend band (overlap // 4) must still leave that much context.
        convolutions = sum(1 for name, value in tensors.items() if value.ndim == 4 and name.endswith(".weight"))
        return -(-4 * convolutions // 3) + 1
    return _OVERLAP.get(architecture, _DEFAULT_OVERLAP)


@functools.cache
def spandrel_module() -> types.ModuleType:
    """spandrel, imported once, with the optional extra architectures when they are installed.

    spandrel imports torchvision for two architectures only (RestoreFormer's input
    normalisation and LaMa's rotation). PyPI's torchvision wheels are built against CUDA builds
    of torch and cannot be imported next to a CPU-only torch; there spandrel is imported with
    `_torchvision_stand_in`, which provides the normalisation exactly and makes LaMa's rotation
    raise (LaMa is an inpainting model, which srgan refuses anyway). The stand-in is removed from
    `sys.modules` again once spandrel is imported, so nothing else ever sees it.
    Raises ModelFileError when spandrel is not installed.
    """
    if torchvision_importable():
        return _import_spandrel()
    with _torchvision_stand_in():
        return _import_spandrel()


@functools.cache
def torchvision_importable() -> bool:
    """Whether the installed torchvision imports next to this torch (see `spandrel_module`)."""
    try:
        importlib.import_module("torchvision")
    except Exception:  # a torchvision built for another torch raises RuntimeError or OSError, not only ImportError
        _drop_modules("torchvision")
        return False
    return True


def _import_spandrel() -> types.ModuleType:
    try:
        spandrel = importlib.import_module("spandrel")
    except ImportError as error:
        raise ModelFileError(
            f"spandrel is not installed ({error}); it loads models of other architectures: pip install spandrel"
        ) from error
    try:
        extra = importlib.import_module("spandrel_extra_arches")
    except ImportError:
        return spandrel
    extra.install(ignore_duplicates=True)
    return spandrel


def _drop_modules(prefix: str) -> None:
    for name in [name for name in sys.modules if name == prefix or name.startswith(prefix + ".")]:
        del sys.modules[name]


class _torchvision_stand_in:  # noqa: N801 - used as a context manager, named like one
    """Puts a minimal `torchvision.transforms.functional` into sys.modules for the duration of a block."""

    def __enter__(self) -> None:
        root = types.ModuleType("torchvision")
        transforms = types.ModuleType("torchvision.transforms")
        functional = types.ModuleType("torchvision.transforms.functional")
        functional.normalize = _normalize
        functional.rotate = _rotate_unavailable
        functional.InterpolationMode = _InterpolationMode
        root.transforms, transforms.functional = transforms, functional
        sys.modules.update(
            {"torchvision": root, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional}
        )

    def __exit__(self, *exc_info: object) -> None:
        _drop_modules("torchvision")


def _normalize(image: torch.Tensor, mean: list[float], std: list[float], inplace: bool = False) -> torch.Tensor:
    """torchvision's `normalize` for C×H×W or N×C×H×W tensors: (image - mean) / std per channel."""
    shape = (-1, 1, 1)
    mean_tensor = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(shape)
    std_tensor = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(shape)
    return image.sub_(mean_tensor).div_(std_tensor) if inplace else (image - mean_tensor) / std_tensor


def _rotate_unavailable(*args: object, **kwargs: object) -> torch.Tensor:
    raise ModelFileError("this model rotates images with torchvision, which cannot be imported next to this torch")


class _InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:160] if text else type(error).__name__
