"""One call from a model file and device settings to a ready `Upscaler`."""

from __future__ import annotations

from .backends import Precision, TorchBackend, resolve_device
from .model_file import LoadedModel
from .upscaler import TileSettings, Upscaler


def create_upscaler(
    model: LoadedModel,
    device: str = "auto",
    precision: Precision = Precision.AUTO,
    settings: TileSettings = TileSettings(),
) -> Upscaler:
    """An `Upscaler` running `model` eagerly on `device` ('auto', 'cpu', 'cuda', 'cuda:N').

    Raises BackendError when the device or precision is not available here.
    """
    backend = TorchBackend(model.network, model.scale, resolve_device(device), precision)
    return Upscaler(backend, settings)
