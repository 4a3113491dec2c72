"""`srgan build-engine`: compile a model file into an engine for the tiled core."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from srgan.engines import (
    TENSORRT_TILE,
    EngineCache,
    EngineKind,
    Precision,
    build_compiled,
    build_tensorrt,
    check_exportable,
    export_onnx,
    resolve_device,
)

from .options import DeviceOption, EnginesDirOption, PrecisionOption
from .state import UsageProblem
from .upscale import load_model_option


def build_engine(
    model: Annotated[
        Optional[Path], typer.Argument(help="Model file or name in the model folders; the bundled one when omitted.")
    ] = None,
    kind: Annotated[EngineKind, typer.Option("--kind", help="compiled (AOTInductor .pt2), tensorrt, or onnx.")] = (
        EngineKind.COMPILED
    ),
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.AUTO,
    tile: Annotated[int, typer.Option("--tile", help="TensorRT: the engine's tile size.")] = TENSORRT_TILE,
    batch: Annotated[int, typer.Option("--batch", min=1, help="TensorRT: the engine's batch.")] = 1,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="ONNX: the file to write.")] = None,
    engines_dir: EnginesDirOption = None,
) -> None:
    """Compile a model into an engine that `--backend compiled|tensorrt` (or auto) then uses."""
    loaded = load_model_option(model, precision)
    console = Console(highlight=False)
    if kind is EngineKind.ONNX:
        if output is None:
            raise UsageProblem("--kind onnx writes a file for other runtimes: give it with -o PATH.onnx")
        console.print(f"wrote {escape(str(export_onnx(loaded, output)))} (float32; dynamic batch, height, width)")
        return
    check_exportable(loaded)
    torch_device = resolve_device(device)
    cache = EngineCache(engines_dir)
    console.print(f"building a {kind.value} engine for {escape(str(loaded.info.path))} on {torch_device} ...")
    if kind is EngineKind.COMPILED:
        path = build_compiled(loaded, torch_device, precision, cache)
    else:
        path = build_tensorrt(loaded, torch_device, precision, (tile, tile), batch, cache)
    console.print(f"cached {escape(str(path))}")
    timing = EngineCache.timing_of(path)
    if timing is not None:
        verdict = "--backend auto will use it" if timing.speedup > 1 else "--backend auto will keep to eager"
        console.print(
            f"one {timing.engine_tile}² tile compiled {timing.engine_seconds:.3f} s, one {timing.eager_tile}² tile"
            f" eager {timing.eager_seconds:.3f} s ({timing.speedup:.2f}× per kept pixel; loading took"
            f" {timing.load_seconds:.1f} s): {verdict}"
        )
