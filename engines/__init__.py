"""srgan's shared core: model files, backends, tiled upscaling, image I/O and engines.

This module is the core's public API: front ends (the CLI, training, the GIMP bridge) and
library callers import from here and nowhere deeper; nothing here imports a front end.
"""

from .arch import MAX_BLOCKS, MAX_CHANNELS, SUPPORTED_SCALES, GeneratorConfig, SRGANGenerator, fold_batchnorm
from .atomic import atomic_path
from .backends import (
    BF16_COST_LIMIT_DB,
    Backend,
    Precision,
    PrecisionChoice,
    TorchBackend,
    choose_precision,
    resolve_device,
)
from .compiled import build_compiled, build_tensorrt, check_exportable, export_onnx, tensorrt_unavailable_reason
from .descriptor import ModelDescriptor
from .digest import file_sha256
from .engine_cache import EngineCache, EngineKind, default_engines_dir
from .errors import (
    BackendError,
    Cancelled,
    DeviceOutOfMemory,
    ImageReadError,
    ImageWriteError,
    ModelFileError,
    NoDefaultModelError,
    Setting,
    SrganError,
)
from .factory import TENSORRT_TILE, BackendKind, create_upscaler
from .image_checks import check_output_folder
from .imageio import (
    DEFAULT_MAX_PIXELS,
    FORMAT_EXTENSIONS,
    Picture,
    decode_image,
    encode_image,
    format_for,
    read_image,
    resize_pixels,
    scaled_size,
    write_image,
)
from .model_file import (
    LoadedModel,
    ModelInfo,
    check_finite,
    load_generator,
    load_model,
    read_pytorch,
    record_bf16_cost,
    save_model,
)
from .model_folders import add_model, default_model_path, find_model_files, model_dirs, resolve_model
from .pipeline import (
    FilePipeline,
    FileResult,
    FileSkipped,
    FileStatus,
    FileTask,
    OutputOptions,
    PipelineObserver,
    PipelineSettings,
    Planner,
    Stage,
    as_file_error,
    upscale_file,
)
from .planning import (
    DEFAULT_NAME,
    IMAGE_EXTENSIONS,
    InputFile,
    InputSurvey,
    Job,
    OutputPlan,
    iter_inputs,
    output_is_file,
    output_path,
    plan_jobs,
    scale_label,
    survey_inputs,
)
from .tiling import ModelGeometry, SizeRequirements, Tiling
from .upscaler import ProgressCallback, TileSettings, Upscaler

__all__ = [
    # errors
    "SrganError",
    "Setting",
    "ModelFileError",
    "NoDefaultModelError",
    "ImageReadError",
    "ImageWriteError",
    "BackendError",
    "DeviceOutOfMemory",
    "Cancelled",
    # models
    "GeneratorConfig",
    "SRGANGenerator",
    "MAX_BLOCKS",
    "MAX_CHANNELS",
    "SUPPORTED_SCALES",
    "fold_batchnorm",
    "LoadedModel",
    "ModelDescriptor",
    "ModelGeometry",
    "SizeRequirements",
    "Tiling",
    "ModelInfo",
    "load_model",
    "load_generator",
    "save_model",
    "record_bf16_cost",
    "read_pytorch",
    "check_finite",
    "default_model_path",
    "find_model_files",
    "model_dirs",
    "resolve_model",
    "add_model",
    # running a model
    "Backend",
    "TorchBackend",
    "BackendKind",
    "Precision",
    "PrecisionChoice",
    "choose_precision",
    "BF16_COST_LIMIT_DB",
    "resolve_device",
    "create_upscaler",
    "Upscaler",
    "TileSettings",
    "ProgressCallback",
    # compiled engines
    "EngineCache",
    "EngineKind",
    "TENSORRT_TILE",
    "build_compiled",
    "build_tensorrt",
    "check_exportable",
    "export_onnx",
    "tensorrt_unavailable_reason",
    "default_engines_dir",
    # images and files
    "Picture",
    "read_image",
    "write_image",
    "check_output_folder",
    "format_for",
    "scaled_size",
    "resize_pixels",
    "FORMAT_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "atomic_path",
    "file_sha256",
    "decode_image",
    "encode_image",
    # the per-file pipeline
    "OutputOptions",
    "upscale_file",
    "FilePipeline",
    "PipelineSettings",
    "PipelineObserver",
    "FileTask",
    "FileResult",
    "FileStatus",
    "FileSkipped",
    "Planner",
    "Stage",
    "as_file_error",
    # planning inputs and outputs
    "DEFAULT_NAME",
    "IMAGE_EXTENSIONS",
    "InputFile",
    "InputSurvey",
    "Job",
    "OutputPlan",
    "iter_inputs",
    "survey_inputs",
    "output_is_file",
    "output_path",
    "plan_jobs",
    "scale_label",
]
