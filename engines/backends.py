"""Compute backends: what runs the network on one batch of tiles.

`Upscaler` talks to every backend through `Backend`, so compiled and TensorRT engines plug in
beside the eager PyTorch backend here. Engines that accept only one input shape say so through
`fixed_tile_shape` and `fixed_batch`; the core then pads tiles and batches to fit.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import enum
import functools
import os
import re
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import final

import torch
from torch import nn

from .arch import BandedReconstruction, banded_reconstruction, low_resolution_tail
from .errors import BackendError, DeviceOutOfMemory, Setting, SrganError
from .tiling import ModelGeometry


class Precision(str, enum.Enum):
    """Arithmetic precision of the network's weights and activations."""

    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


_DTYPES = {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}


class Backend(ABC):
    """Runs an upscaling network on batches of tiles.

    name: short description shown to users ("torch-cpu fp32").
    scale: the network's upscaling factor.
    device: where `infer` wants its input and leaves its output.
    fixed_tile_shape: (rows, columns) of the only tile shape the engine accepts, or None.
    fixed_batch: the only batch size the engine accepts, or None.
    preferred_tile_size: the tile size used when the caller does not choose one.
    geometry: what the tiler must know about the network (channels, size requirements,
        overlap, tiling preference); `geometry.scale` equals `scale`.
    """

    name: str
    scale: int
    device: torch.device
    geometry: ModelGeometry = ModelGeometry()
    fixed_tile_shape: tuple[int, int] | None = None
    fixed_batch: int | None = None
    preferred_tile_size: int = 256

    @final
    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        """Upscale a batch of tiles.

        batch: N×C×h×w float32 on `device`, values in [0, 1], C = geometry.channels, h and w
        meeting geometry.size_requirements.
        Returns N×C×(scale·h)×(scale·w) on `device`, floating point, nominally [0, 1] (unclamped).
        Raises DeviceOutOfMemory when the batch does not fit, BackendError for other failures.

        Backends implement `_infer`; this wrapper turns whatever their runtime raises into those
        two errors, so a failing tile ends one image, never a whole batch of files.
        """
        try:
            return self._infer(batch)
        except SrganError:
            raise
        except Exception as error:  # each runtime (torch, AOTInductor, ONNX Runtime, TensorRT) has its own types
            if _is_out_of_memory(error):
                raise DeviceOutOfMemory(
                    f"{self.device} ran out of memory for a batch of {tuple(batch.shape)}"
                ) from error
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise BackendError(f"{self.name} failed on a batch of {tuple(batch.shape)}: {detail}") from error

    @abstractmethod
    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        """`infer` without the mapping of errors: may raise whatever the runtime raises."""


_OUT_OF_MEMORY = re.compile(r"out[ _]of[ _]memory|outofmemory|can't allocate memory|failed to allocate memory")


def _is_out_of_memory(error: Exception) -> bool:
    """Whether a runtime's exception means the device had no memory left for the batch."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return bool(_OUT_OF_MEMORY.search(str(error).lower()))


def resolve_device(spec: str) -> torch.device:
    """Turn 'auto', 'cpu', 'cuda' or 'cuda:N' into an available torch.device.

    Raises BackendError naming the fix when the device does not exist here.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise BackendError(
            f"unknown device '{spec}': it is one of auto, cpu, cuda, cuda:N", setting=Setting.DEVICE
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise BackendError(f"device '{spec}' is not supported: it is auto, cpu, cuda or cuda:N", setting=Setting.DEVICE)
    if not torch.cuda.is_available():
        raise BackendError(
            f"device '{spec}' asked for, but this PyTorch sees no CUDA GPU", setting=Setting.DEVICE, suggestion="cpu"
        )
    index = device.index or 0
    if index >= torch.cuda.device_count():
        raise BackendError(
            f"device '{spec}' does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s)",
            setting=Setting.DEVICE,
        )
    return torch.device("cuda", index)


# The largest loss of PSNR-Y (dB) on the held-out crops that `auto` accepts for bf16 on a CPU.
BF16_COST_LIMIT_DB = 0.05


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a backend will use, and why (a short phrase for `srgan info` and logs)."""

    precision: Precision
    reason: str


def native_cpu_bf16() -> str | None:
    """The CPU feature that executes bf16 arithmetic natively here, or None when there is none.

    Read from `torch.cpu.get_capabilities()` (cpuinfo, as PyTorch's own kernels dispatch on):
    AMX-BF16 or AVX512-BF16 on x86, the BF16 extension on Arm. oneDNN's own "bf16 supported"
    check (`torch.ops.mkldnn._is_mkldnn_bf16_supported`) also answers yes on plain AVX-512,
    where bf16 is emulated with fp32 instructions and gains nothing, so it is not used. None as
    well where `onednn_isa_limit` keeps oneDNN below the instructions that compute in bf16.
    """
    if onednn_isa_limit() is not None:
        return None
    capabilities = torch.cpu.get_capabilities()
    for feature in ("amx_bf16", "avx512_bf16", "sve_bf16", "bf16"):
        if capabilities.get(feature) is True:
            return feature
    return None


# The values of oneDNN's ONEDNN_MAX_CPU_ISA (DNNL_MAX_CPU_ISA before oneDNN 2.0) that stop it
# below the instructions that compute in bf16; others (AVX512_CORE_BF16 and up, ALL, DEFAULT)
# leave them in use.
_BELOW_BF16_ISA_LEVELS = frozenset(
    {
        "SSE41",
        "AVX",
        "AVX2",
        "AVX2_VNNI",
        "AVX2_VNNI_2",
        "AVX512_MIC",
        "AVX512_MIC_4OPS",
        "AVX512_CORE",
        "AVX512_CORE_VNNI",
    }
)


def onednn_isa_limit() -> str | None:
    """The limit set on oneDNN's instruction sets when it keeps oneDNN from native bf16, else None.

    oneDNN reads the variable once, so setting it is how a CPU with native bf16 is made to run
    the code an AVX2-only one runs (benchmarks/upscale_cpu.py --isa avx2); bf16 under such a
    limit is emulated, slower than fp32.
    """
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        limit = os.environ.get(name, "").strip().upper()
        if limit:
            return f"{name}={limit}" if limit in _BELOW_BF16_ISA_LEVELS else None
    return None


ALL_PRECISIONS = frozenset({Precision.FP32, Precision.FP16, Precision.BF16})


def choose_precision(
    precision: Precision,
    device: torch.device,
    bf16_cost_db: float | None = None,
    supported: frozenset[Precision] = ALL_PRECISIONS,
    model: str = "",
) -> PrecisionChoice:
    """The precision to use on `device` for a model that runs correctly in `supported`, with the reason.

    AUTO on CUDA is fp16, else bf16, else fp32, whichever the model supports first; on a CPU it
    is bf16 where the CPU executes bf16 natively (`native_cpu_bf16`), the model supports it and
    its measured bf16 cost (`bf16_cost_db`, PSNR-Y dB lost on the held-out crops; None when it
    was never measured) is known and at most BF16_COST_LIMIT_DB, and fp32 otherwise.
    Raises BackendError for fp16 on a CPU, which PyTorch runs slowly and inexactly there, and for
    a precision the model (named `model` in the message) does not support.
    """
    if precision is Precision.FP16 and device.type == "cpu":
        raise BackendError(
            "fp16 is not supported on the CPU (PyTorch runs it slowly and inexactly there); fp32 and bf16 are",
            setting=Setting.PRECISION,
            suggestion="fp32",
        )
    if precision not in supported and precision is not Precision.AUTO:
        choices = ", ".join(sorted(choice.value for choice in supported))
        raise BackendError(
            f"{model or 'this model'} does not run correctly in {precision.value}; it supports {choices}",
            setting=Setting.PRECISION,
            suggestion="auto",
        )
    if precision is not Precision.AUTO:
        return PrecisionChoice(precision, "asked for")
    if device.type == "cuda":
        if Precision.FP16 in supported:
            return PrecisionChoice(Precision.FP16, "CUDA GPU")
        fallback = Precision.BF16 if Precision.BF16 in supported else Precision.FP32
        return PrecisionChoice(fallback, "CUDA GPU; the model does not run correctly in fp16")
    feature = native_cpu_bf16()
    if feature is None:
        limit = onednn_isa_limit()
        if limit is not None:
            return PrecisionChoice(Precision.FP32, f"{limit} keeps oneDNN from native bf16")
        return PrecisionChoice(Precision.FP32, "this CPU has no native bf16 (AVX512-BF16, AMX or Arm BF16)")
    if Precision.BF16 not in supported:
        return PrecisionChoice(Precision.FP32, "the model does not run correctly in bf16")
    if bf16_cost_db is None:
        # Unmeasured models stay in fp32: SwinIR converted to bf16, for one, fails on the CPU
        # (buffers computed in fp32 meet bf16 weights), and bf16's quality cost is per model.
        return PrecisionChoice(
            Precision.FP32, f"native bf16 on this CPU ({feature}), but its cost was not measured for this model"
        )
    if bf16_cost_db > BF16_COST_LIMIT_DB:
        return PrecisionChoice(
            Precision.FP32, f"bf16 costs this model {bf16_cost_db:.3f} dB PSNR-Y, over {BF16_COST_LIMIT_DB} dB"
        )
    return PrecisionChoice(
        Precision.BF16, f"native bf16 on this CPU ({feature}); measured cost {bf16_cost_db:.3f} dB PSNR-Y"
    )


def resolve_precision(
    precision: Precision,
    device: torch.device,
    bf16_cost_db: float | None = None,
    supported: frozenset[Precision] = ALL_PRECISIONS,
    model: str = "",
) -> Precision:
    """`choose_precision(...).precision`: the precision alone."""
    return choose_precision(precision, device, bf16_cost_db, supported, model).precision


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc on Linux (its allocator's settings are glibc's), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@functools.cache
def keep_freed_memory_for_reuse() -> bool:
    """Ask glibc's allocator to keep freed blocks of up to 1 GiB instead of unmapping them.

    CPU inference allocates and frees feature maps of tens to hundreds of MB for every tile;
    with glibc's defaults each one is a fresh mmap whose pages fault in again, which cost a
    quarter of the CPU time in benchmarks/upscale_cpu.py. Peak memory is unchanged. Returns
    False where the C library is not glibc (the setting is then simply not available).
    """
    libc = _glibc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def return_freed_memory() -> bool:
    """Hand the heap's free memory back to the system now (glibc's malloc_trim).

    `keep_freed_memory_for_reuse` keeps the tiles' freed feature maps for the next tile; once a
    large image is upscaled, the memory its encoder needs is asked for by another thread, from
    another arena, so what the tiles left would only add to the peak. Returns False where the C
    library is not glibc or nothing was returned.
    """
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


class TorchBackend(Backend):
    """Eager PyTorch on a CPU or CUDA device, channels_last, in fp32, fp16 or bf16."""

    def __init__(
        self,
        network: nn.Module,
        scale: int,
        device: torch.device,
        precision: Precision = Precision.AUTO,
        geometry: ModelGeometry | None = None,
    ) -> None:
        """network: maps N×C×h×w in [0, 1] to N×C×(scale·h)×(scale·w).

        geometry: the network's channels, size requirements and overlap; an RGB network without
        requirements when omitted. The backend runs its own copy, so the caller's network keeps
        its device and dtype and several backends (fp32 and bf16, say) can be made from one model.
        """
        self.scale = scale
        self.device = device
        self.geometry = geometry or ModelGeometry(scale=scale)
        self.precision = resolve_precision(precision, device)
        self._dtype = _DTYPES[self.precision]
        # Both forms copy; on CUDA their effect was not measured, so the network is kept as it is.
        if device.type == "cpu":
            keep_freed_memory_for_reuse()
            network = banded_reconstruction(low_resolution_tail(network))
        else:
            network = copy.deepcopy(network)
        # Where an SRGAN generator's sub-pixel stages run in bands (arch.BandedReconstruction), a
        # CPU tile's memory is mostly its trunk's: 384-pixel tiles spend 16% of their work on
        # overlap where 160-pixel ones spent 36%, and kept `srgan upscale` of 2000×1500 under
        # 1 GB of RSS (benchmarks/upscale_cpu.py). Other architectures hold full-resolution maps
        # for the whole tile, so they keep 160 on a CPU. A GPU wants large tiles.
        banded = any(isinstance(module, BandedReconstruction) for module in network.modules())
        self.preferred_tile_size = 512 if device.type != "cpu" else 384 if banded else 160
        self.network = network.eval().to(device=device, dtype=self._dtype, memory_format=torch.channels_last)
        self.name = f"torch-{device.type} {self.precision.value}"

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(dtype=self._dtype, memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.network(batch)
