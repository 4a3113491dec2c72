"""srgan's shared core: generator architectures, model files, backends, tiling, image I/O.

Everything a front end needs is importable from here; nothing here imports a front end.
"""

from .arch import GeneratorConfig, SRGANGenerator, fold_batchnorm, icnr_, offset_major_shuffle
from .backends import Backend, Precision, TorchBackend, resolve_device, resolve_precision
from .errors import (
    BackendError,
    Cancelled,
    DeviceOutOfMemory,
    ImageReadError,
    ImageWriteError,
    ModelFileError,
    NoDefaultModelError,
    SrganError,
)
from .compiled import CompiledBackend, OnnxRuntimeBackend, TensorRTBackend, export_network, export_onnx
from .engine_cache import EngineCache, EngineKey
from .factory import BACKENDS, create_upscaler
from .imageio import (
    DEFAULT_MAX_PIXELS,
    FORMAT_EXTENSIONS,
    Picture,
    format_for,
    read_image,
    resize_pixels,
    scaled_size,
    write_image,
)
from .descriptor import ModelDescriptor
from .model_file import LoadedModel, ModelInfo, load_generator, load_model, save_model
from .model_folders import add_model, default_model_path, find_model_files, model_dirs, resolve_model
from .tiling import ModelGeometry, SizeRequirements, Span, Tile, Tiling, plan_tiles
from .upscaler import ProgressCallback, TileSettings, Upscaler

__all__ = [
    "BACKENDS",
    "CompiledBackend",
    "EngineCache",
    "EngineKey",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "export_network",
    "export_onnx",
    "DEFAULT_MAX_PIXELS",
    "FORMAT_EXTENSIONS",
    "Backend",
    "BackendError",
    "Cancelled",
    "DeviceOutOfMemory",
    "GeneratorConfig",
    "ImageReadError",
    "ImageWriteError",
    "LoadedModel",
    "ModelDescriptor",
    "ModelGeometry",
    "SizeRequirements",
    "Tiling",
    "add_model",
    "resolve_model",
    "ModelFileError",
    "ModelInfo",
    "NoDefaultModelError",
    "Picture",
    "Precision",
    "ProgressCallback",
    "SRGANGenerator",
    "Span",
    "SrganError",
    "Tile",
    "TileSettings",
    "TorchBackend",
    "Upscaler",
    "create_upscaler",
    "default_model_path",
    "find_model_files",
    "fold_batchnorm",
    "offset_major_shuffle",
    "format_for",
    "icnr_",
    "load_generator",
    "load_model",
    "model_dirs",
    "plan_tiles",
    "read_image",
    "resolve_device",
    "resolve_precision",
    "save_model",
    "resize_pixels",
    "scaled_size",
    "write_image",
]
