"""srgan's shared core: generator architectures, model files, backends, tiling, image I/O.

Everything a front end needs is importable from here; nothing here imports a front end.
"""

from .arch import GeneratorConfig, SRGANGenerator, fold_batchnorm, icnr_, offset_major_shuffle
from .backends import (
    BF16_COST_LIMIT_DB,
    Backend,
    Precision,
    PrecisionChoice,
    TorchBackend,
    choose_precision,
    native_cpu_bf16,
    resolve_device,
    resolve_precision,
)
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
from .engine_cache import EngineCache, EngineKey, EngineTiming
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
from .model_file import LoadedModel, ModelInfo, load_generator, load_model, record_bf16_cost, save_model
from .model_folders import default_model_path, find_model_files, model_dirs
from .tiling import Span, Tile, plan_tiles
from .upscaler import ProgressCallback, TileSettings, Upscaler

__all__ = [
    "BACKENDS",
    "BF16_COST_LIMIT_DB",
    "PrecisionChoice",
    "choose_precision",
    "native_cpu_bf16",
    "record_bf16_cost",
    "CompiledBackend",
    "EngineCache",
    "EngineKey",
    "EngineTiming",
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
