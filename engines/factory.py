"""One call from a model file and device settings to a ready `Upscaler`."""

from __future__ import annotations

import enum
from pathlib import Path

from .backends import Backend, Precision, TorchBackend, resolve_device
from .compiled import (
    CompiledBackend,
    TensorRTBackend,
    build_compiled,
    build_tensorrt,
    check_exportable,
    model_precision,
    tensorrt_unavailable_reason,
)
from .engine_cache import EngineCache, EngineKey, EngineTiming
from .errors import BackendError, Setting
from .model_file import LoadedModel
from .upscaler import TileSettings, Upscaler

TENSORRT_TILE = 512


class BackendKind(str, enum.Enum):
    """Which backend runs the network; see `create_upscaler`."""

    AUTO = "auto"
    EAGER = "eager"
    COMPILED = "compiled"
    TENSORRT = "tensorrt"


def create_upscaler(
    model: LoadedModel,
    device: str = "auto",
    precision: Precision = Precision.AUTO,
    settings: TileSettings = TileSettings(),
    backend: BackendKind = BackendKind.AUTO,
    engines_dir: Path | None = None,
) -> Upscaler:
    """An `Upscaler` running `model` on `device` ('auto', 'cpu', 'cuda', 'cuda:N').

    backend: 'eager' (PyTorch), 'compiled' (an AOTInductor package, built into the engine cache
    when missing), 'tensorrt' (a TensorRT engine for the tile size and batch, built when
    missing), or 'auto': a cached TensorRT engine on an NVIDIA GPU, else a cached compiled
    package that measured faster than eager when it was built (`EngineTiming`), else eager; it
    never builds. Precision 'auto' is resolved by `choose_precision` with the model's recorded
    bf16 cost, and never picks one the model's architecture does not support.
    `upscaler.backend.name` says which was chosen.
    Raises BackendError when the device, precision or backend is not available here or for this
    architecture, or a cached engine is stale or foreign.
    """
    try:
        backend = BackendKind(backend)
    except ValueError:
        names = ", ".join(kind.value for kind in BackendKind)
        raise BackendError(f"unknown backend '{backend}': it is one of {names}", setting=Setting.BACKEND) from None
    torch_device = resolve_device(device)
    resolved = model_precision(model, precision, torch_device)
    cache = EngineCache(engines_dir)
    exportable = model.info.export_refusal is None
    if not exportable and backend in ("compiled", "tensorrt"):
        check_exportable(model)
    if model.network is None:  # an ONNX file: ONNX Runtime is its only backend
        from .onnx_models import OnnxModelBackend

        return Upscaler(OnnxModelBackend(model.info, torch_device), settings)
    chosen = None
    if exportable:
        chosen = _tensorrt(model, torch_device, resolved, settings, backend, cache) or _compiled(
            model, torch_device, resolved, backend, cache
        )
    if chosen is None:
        chosen = TorchBackend(model.network, model.scale, torch_device, resolved, model.info.geometry)
    return Upscaler(chosen, settings)


def _tensorrt(model, device, precision, settings, backend, cache) -> Backend | None:
    if backend not in (BackendKind.AUTO, BackendKind.TENSORRT):
        return None
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        if backend is BackendKind.TENSORRT:
            raise BackendError(f"TensorRT is unavailable here: {reason}", setting=Setting.BACKEND, suggestion="eager")
        return None
    tile = settings.tile_size or TENSORRT_TILE
    key = EngineKey.for_device(
        "tensorrt", model.info.sha256, device, precision.value, (tile, tile), settings.batch_size
    )
    engine = cache.lookup(key)
    if engine is None and backend is BackendKind.TENSORRT:
        engine = build_tensorrt(model, device, precision, (tile, tile), settings.batch_size, cache)
    return TensorRTBackend(model, engine, device, precision, (tile, tile), settings.batch_size) if engine else None


def _compiled(model, device, precision, backend, cache) -> Backend | None:
    if backend not in (BackendKind.AUTO, BackendKind.COMPILED):
        return None
    key = EngineKey.for_device("compiled", model.info.sha256, device, precision.value)
    package = cache.lookup(key)
    if package is None and backend is BackendKind.COMPILED:
        package = build_compiled(model, device, precision, cache)
    if package is not None and backend is BackendKind.AUTO and not _measured_faster(cache.timing(key)):
        return None
    return CompiledBackend(model, package, device, precision) if package else None


def _measured_faster(timing: EngineTiming | None) -> bool:
    """Whether a package's build-time timing shows it beating eager (packages built before
    timings were recorded have none, and are not assumed faster)."""
    return timing is not None and timing.speedup > 1
