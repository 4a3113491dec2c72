"""ONNX model files (OpenModelDB ships some models only so) through ONNX Runtime.

An ONNX file holds a graph, not Python, so reading one runs no code from it. The model's scale
is measured by running the graph once on a small input; its channels come from the input's
declared shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .backends import Backend, Precision
from .descriptor import ModelDescriptor
from .digest import file_sha256
from .errors import ModelFileError
from .tiling import ModelGeometry, SizeRequirements

ONNX_SUFFIXES = (".onnx",)
# Windows smaller than this are padded (some exported graphs fail on 1- or 2-pixel inputs);
# padding changes the pixels near that edge, so it is kept as small as that.
_MINIMUM_SIDE = 4
_PROBE_SIDE = 32


def _session(path: Path, device: torch.device | None = None):
    try:
        import onnxruntime
    except ImportError:
        raise ModelFileError(f"{path}: ONNX models need ONNX Runtime: pip install onnxruntime") from None
    providers = ["CPUExecutionProvider"]
    if device is not None and device.type == "cuda":
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    try:
        return onnxruntime.InferenceSession(str(path), providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for every kind of bad file
        raise ModelFileError(f"{path}: not a loadable ONNX model ({_first_line(error)})") from error


def describe_onnx(path: Path) -> ModelDescriptor:
    """Read an ONNX image model's channels and scale.

    Raises ModelFileError when the file does not load, its input is not N×C×H×W with C in (1, 3)
    and free H and W, or its output is not the input scaled by a whole factor.
    """
    path = Path(path)
    session = _session(path)
    inputs = session.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    if len(shape) != 4 or shape[1] not in (1, 3) or isinstance(shape[2], int) or isinstance(shape[3], int):
        raise ModelFileError(
            f"{path}: expected one image input N×C×H×W with C 1 or 3 and any height and width, found"
            f" {len(inputs)} input(s) of shape {shape}"
        )
    channels = int(shape[1])
    dtype = np.float16 if "float16" in inputs[0].type else np.float32
    probe = np.full((1, channels, _PROBE_SIDE, _PROBE_SIDE), 0.5, dtype=dtype)
    try:
        (output,) = session.run(None, {inputs[0].name: probe})[:1]
    except Exception as error:
        raise ModelFileError(
            f"{path}: the ONNX model fails on a {_PROBE_SIDE}-pixel image ({_first_line(error)})"
        ) from error
    scale, remainder = divmod(output.shape[-1], _PROBE_SIDE)
    if (
        output.ndim != 4
        or output.shape[1] != channels
        or remainder
        or scale < 1
        or output.shape[-2] != scale * _PROBE_SIDE
    ):
        raise ModelFileError(
            f"{path}: the ONNX model turns a {_PROBE_SIDE}×{_PROBE_SIDE} image into {tuple(output.shape)};"
            " expected the same channels scaled by a whole factor"
        )
    return ModelDescriptor(
        path=path,
        architecture="ONNX",
        geometry=ModelGeometry(
            scale=scale, channels=channels, size_requirements=SizeRequirements(minimum=_MINIMUM_SIDE), overlap=32
        ),
        precisions=frozenset({Precision.FP32}),
        export_refusal="an ONNX model is already an engine; it runs through ONNX Runtime",
        sha256=file_sha256(path),
        file_format="onnx",
        details={"input_type": inputs[0].type},
    )


class OnnxModelBackend(Backend):
    """An ONNX model file run by ONNX Runtime, on the CPU or, with onnxruntime-gpu, a CUDA GPU."""

    def __init__(self, descriptor: ModelDescriptor, device: torch.device) -> None:
        self.geometry = descriptor.geometry
        self.scale = descriptor.scale
        self.device = torch.device("cpu")  # windows go in and come out as host tensors
        self._session = _session(descriptor.path, device)
        self._input = self._session.get_inputs()[0]
        self._dtype = np.float16 if "float16" in self._input.type else np.float32
        provider = self._session.get_providers()[0].replace("ExecutionProvider", "").lower()
        self.name = f"onnxruntime-{provider} fp32"
        self.preferred_tile_size = 160 if provider == "cpu" else 512

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        # `Backend.infer` turns ONNX Runtime's exceptions into DeviceOutOfMemory or BackendError.
        array = batch.float().contiguous().numpy().astype(self._dtype, copy=False)
        (result,) = self._session.run(None, {self._input.name: array})[:1]
        return torch.from_numpy(np.asarray(result, dtype=np.float32))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:160] if text else type(error).__name__
