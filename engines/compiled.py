"""Compiled engines for the tiled core: AOTInductor packages, ONNX files, TensorRT programs.

All three start from the same `torch.export` graph of the inference network (BatchNorm folded,
values in [0, 1]) with dynamic batch, height and width. Each backend plugs into `Upscaler`
through `Backend`; TensorRT engines are built for one tile shape and batch, which the core pads
to. Engines live in an `EngineCache` keyed on everything they depend on.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from .arch import SRGANGenerator, low_resolution_tail, offset_major_shuffle
from .atomic import atomic_path
from .backends import _DTYPES, Backend, Precision, TorchBackend, resolve_precision
from .engine_cache import EngineCache, EngineKey, EngineTiming
from .errors import BackendError, Setting
from .model_file import LoadedModel

# Sizes 0 and 1 are specialised by torch.export; smaller tiles run through the eager network.
MIN_SIDE = 8
MAX_SIDE = 4096
MAX_BATCH = 64


class CastingNetwork(nn.Module):
    """Runs `network` in `dtype` behind a float32 interface, so engines take and give float32."""

    def __init__(self, network: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.network = copy.deepcopy(network).to(dtype)  # the caller's network stays as it was
        self.dtype = dtype

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image.to(self.dtype)).float()


def export_network(model: LoadedModel, device: torch.device, precision: Precision) -> torch.export.ExportedProgram:
    """The inference network as a torch.export program, dynamic in batch, height and width.

    This is the graph torch-tensorrt's dynamo path consumes and AOTInductor compiles. Its
    sub-pixel stages read channels offset-major (`offset_major_shuffle`), which inductor turns
    into contiguous copies instead of strided gathers, and its tail runs before the last shuffle
    (`low_resolution_tail`), as in the eager CPU backend; a change to this graph must bump
    `engine_cache.EXPORT_REVISION` so that engines built from the old one are not reused.
    """
    check_exportable(model)
    dtype = _DTYPES[model_precision(model, precision, device)]
    source = model.network
    if isinstance(source, SRGANGenerator):
        source = offset_major_shuffle(low_resolution_tail(source))
    network = CastingNetwork(source, dtype).eval().to(device, memory_format=torch.channels_last)
    multiple = model.info.geometry.size_requirements.multiple_of
    side = model.info.geometry.size_requirements.padded(64, 64)[0]
    example = torch.rand(2, model.info.channels, side, side, device=device)
    example = example.contiguous(memory_format=torch.channels_last)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # Networks that need sides divisible by `multiple` (pixel-unshuffle inputs) are exported
    # for those sides only; the tiler pads every window to them.
    height = multiple * torch.export.Dim("height", min=_ceil(MIN_SIDE, multiple), max=MAX_SIDE // multiple)
    width = multiple * torch.export.Dim("width", min=_ceil(MIN_SIDE, multiple), max=MAX_SIDE // multiple)
    if multiple == 1:
        height = torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE)
        width = torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)
    with torch.no_grad():
        return torch.export.export(network, (example,), dynamic_shapes=({0: batch, 2: height, 3: width},))


def _ceil(value: int, multiple: int) -> int:
    return -(-value // multiple)


def check_exportable(model: LoadedModel) -> None:
    """Raise BackendError with the reason when the model's architecture gets no compiled engine."""
    if model.info.export_refusal is not None:
        message = f"{model.info.path}: {model.info.export_refusal}"
        raise BackendError(message, setting=Setting.BACKEND, suggestion="eager")


def model_precision(model: LoadedModel, precision: Precision, device: torch.device) -> Precision:
    """`resolve_precision` for this model's architecture."""
    name = f"{model.info.path} ({model.info.architecture})"
    return resolve_precision(precision, device, model.info.bf16_cost_db, model.info.precisions, name)


def build_compiled(model: LoadedModel, device: torch.device, precision: Precision, cache: EngineCache) -> Path:
    """Compile an AOTInductor package (.pt2) for `device` into the cache; returns its path.

    The package is timed against eager PyTorch on this machine before it is stored, and the
    timing goes into its record, so that `--backend auto` can pass over a package that is slower.
    """
    precision = model_precision(model, precision, device)
    key = EngineKey.for_device("compiled", model.info.sha256, device, precision.value)
    cache.require_folder()  # before minutes of compiling, not after
    program = export_network(model, device, precision)
    with cache.scratch() as scratch:
        built = scratch / "engine.pt2"
        torch._inductor.aoti_compile_and_package(program, package_path=str(built))
        check_package_runs(built, device, model.info.channels, model.info.geometry.size_requirements.padded(16, 16))
        timing = time_against_eager(model, built, device, precision)
        return cache.store(key, built, timing)


def time_against_eager(
    model: LoadedModel, package: Path, device: torch.device, precision: Precision, repeats: int = 3
) -> EngineTiming:
    """Time a tile of each one's default size through `package` and through eager PyTorch, alternately.

    Best of `repeats` after a warm-up each; alternating keeps a machine shared with other work
    from favouring whichever ran in the quieter moment. The two default sizes differ on a CPU,
    so `EngineTiming.speedup` compares time per kept pixel.
    """
    started = time.perf_counter()
    engine = CompiledBackend(model, package, device, precision)
    load_seconds = time.perf_counter() - started
    eager = TorchBackend(model.network, model.scale, device, precision, model.info.geometry)
    requirements = model.info.geometry.size_requirements
    sides = {backend: requirements.padded(*(backend.preferred_tile_size,) * 2)[0] for backend in (engine, eager)}
    tiles = {backend: torch.rand(1, model.info.channels, side, side, device=device) for backend, side in sides.items()}
    best = {engine: float("inf"), eager: float("inf")}
    for round_ in range(repeats + 1):
        for backend in best:
            seconds = _seconds(backend, tiles[backend])
            if round_:  # round 0 is the warm-up
                best[backend] = min(best[backend], seconds)
    overlap = max(0, min(model.info.geometry.overlap, (min(sides.values()) - 8) // 2))
    return EngineTiming(sides[engine], sides[eager], overlap, best[engine], best[eager], load_seconds)


def _seconds(backend: Backend, tile: torch.Tensor) -> float:
    if tile.device.type == "cuda":
        torch.cuda.synchronize(tile.device)
    started = time.perf_counter()
    backend.infer(tile)
    if tile.device.type == "cuda":
        torch.cuda.synchronize(tile.device)
    return time.perf_counter() - started


_PROBE = """
import sys, torch
runner = torch._inductor.aoti_load_package(sys.argv[1])
shape = [int(value) for value in sys.argv[3:6]]
runner(torch.rand(1, *shape, device=sys.argv[2]).contiguous(memory_format=torch.channels_last))
"""


def check_package_runs(
    package: Path, device: torch.device, channels: int = 3, side: tuple[int, int] = (16, 16)
) -> None:
    """Load and run a freshly built package in a child process before it is kept.

    Loading a package can crash the whole process rather than raise (torch 2.11 did, with a
    segmentation fault, on a lent H100), so it is tried where a crash costs nothing.
    Raises BackendError saying what happened.
    """
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, str(package), str(device), str(channels), *map(str, side)],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        raise BackendError(f"{package}: the compiled package did not load within 10 minutes") from None
    if result.returncode != 0:
        how = f"killed by signal {-result.returncode}" if result.returncode < 0 else f"exit {result.returncode}"
        last = (result.stderr.strip().splitlines() or [""])[-1]
        raise BackendError(
            f"the compiled package does not run with torch {torch.__version__} here ({how}"
            f"{': ' + last if last else ''}); it was not kept",
            setting=Setting.BACKEND,
            suggestion="eager",
        )


def export_onnx(model: LoadedModel, path: Path, opset: int = 17) -> Path:
    """Write an ONNX file (float32, dynamic batch, height and width) for other runtimes, atomically.

    Raises BackendError (setting OUTPUT) when the file cannot be written there.
    """
    if model.network is None:
        raise BackendError(f"{model.info.path}: already an ONNX model", setting=Setting.MODEL)
    network = _private_copy(model.network, torch.device("cpu"))
    example = torch.rand(1, model.info.channels, *model.info.geometry.size_requirements.padded(64, 64))
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "upscaled": {0: "batch", 2: "out_height", 3: "out_width"}}
    path = Path(path)
    try:
        with atomic_path(path) as temporary, torch.no_grad():
            torch.onnx.export(
                network,
                (example,),
                str(temporary),
                dynamo=False,
                input_names=["image"],
                output_names=["upscaled"],
                dynamic_axes=axes,
                opset_version=opset,
            )
    except OSError as error:
        raise BackendError(
            f"{path}: cannot write the ONNX file ({error.strerror or error})", setting=Setting.OUTPUT
        ) from error
    return path


def _private_copy(network: nn.Module, device: torch.device) -> nn.Module:
    """An eval-mode copy of `network` on `device`; the caller's module, which others may share, stays as it was."""
    return copy.deepcopy(network).eval().to(device)


class _EagerForSmallTiles(Backend):
    """Shared by engines that cannot take tiles under MIN_SIDE: those go to the eager network."""

    def __init__(self, model: LoadedModel, device: torch.device) -> None:
        self.scale = model.scale
        self.device = device
        self.geometry = model.info.geometry
        self._eager = _private_copy(model.network, device)

    def _small(self, batch: torch.Tensor) -> torch.Tensor | None:
        if min(batch.shape[2:]) >= MIN_SIDE:
            return None
        with torch.inference_mode():
            return self._eager(batch.float())


class CompiledBackend(_EagerForSmallTiles):
    """An AOTInductor package: ahead-of-time compiled kernels for a CPU or a CUDA GPU."""

    def __init__(self, model: LoadedModel, package: Path, device: torch.device, precision: Precision) -> None:
        super().__init__(model, device)
        self.precision = model_precision(model, precision, device)
        self.name = f"compiled-{device.type} {self.precision.value}"
        self.preferred_tile_size = 160 if device.type == "cpu" else 512
        try:
            self._runner = torch._inductor.aoti_load_package(str(package))
        except (RuntimeError, OSError) as error:
            raise BackendError(
                f"{package}: cannot load the compiled package ({error}); delete it and rebuild"
            ) from None

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        small = self._small(batch)
        if small is not None:
            return small
        with torch.inference_mode():
            return self._runner(batch.float().contiguous(memory_format=torch.channels_last))


class OnnxRuntimeBackend(_EagerForSmallTiles):
    """An ONNX file run by ONNX Runtime (the optional onnxruntime package), on the CPU."""

    def __init__(self, model: LoadedModel, path: Path) -> None:
        super().__init__(model, torch.device("cpu"))
        try:
            import onnxruntime
        except ImportError:
            raise BackendError("ONNX Runtime is not installed: pip install onnxruntime") from None
        self.name = "onnxruntime-cpu fp32"
        self._session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        small = self._small(batch)
        if small is not None:
            return small
        (result,) = self._session.run(None, {"image": batch.float().contiguous().numpy()})
        return torch.from_numpy(result)


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot be used here, or None when it can."""
    if not torch.cuda.is_available():
        return "no CUDA GPU visible" if torch.version.cuda else "this PyTorch is a CPU build"
    try:
        import torch_tensorrt  # noqa: F401  (optional extra)
    except ImportError:
        return "torch-tensorrt is not installed (pip install 'srgan[tensorrt]')"
    return None


def build_tensorrt(
    model: LoadedModel,
    device: torch.device,
    precision: Precision,
    tile_shape: tuple[int, int],
    batch: int,
    cache: EngineCache,
) -> Path:
    """Build a TensorRT engine for one tile shape and batch through torch-tensorrt's dynamo path.

    Raises BackendError when TensorRT cannot be used here.
    """
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise BackendError(f"TensorRT is unavailable: {reason}")
    import torch_tensorrt

    check_exportable(model)
    precision = model_precision(model, precision, device)
    key = EngineKey.for_device("tensorrt", model.info.sha256, device, precision.value, tile_shape, batch)
    cache.require_folder()  # before minutes of building, not after
    network = _private_copy(model.network, device)
    example = torch.rand(batch, model.info.channels, *tile_shape, device=device)
    program = torch.export.export(network, (example,))
    engine = torch_tensorrt.dynamo.compile(program, inputs=[example], enabled_precisions={_DTYPES[precision]})
    with cache.scratch() as scratch:
        built = scratch / "engine.ep"
        torch_tensorrt.save(engine, str(built), inputs=[example])
        return cache.store(key, built)


class TensorRTBackend(Backend):
    """A TensorRT engine for one tile shape and batch; the core pads tiles and batches to fit."""

    def __init__(
        self,
        model: LoadedModel,
        engine: Path,
        device: torch.device,
        precision: Precision,
        tile_shape: tuple[int, int],
        batch: int,
    ) -> None:
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise BackendError(f"TensorRT is unavailable: {reason}")
        import torch_tensorrt  # noqa: F401  (registers the engine's operators for loading)

        self.scale, self.device, self.geometry = model.scale, device, model.info.geometry
        self.fixed_tile_shape, self.fixed_batch = tile_shape, batch
        self.precision = model_precision(model, precision, device)
        self.name = f"tensorrt {self.precision.value} {tile_shape[0]}×{tile_shape[1]}×{batch}"
        self._module = torch.export.load(str(engine)).module()

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._module(batch.float())
