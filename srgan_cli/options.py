"""Options shared by several commands, declared once."""

from __future__ import annotations

import os
import re
from pathlib import Path
from string import Formatter
from typing import Annotated, Optional

import typer

from srgan.engines import DEFAULT_MAX_PIXELS, BackendKind, Precision, TileSettings

from .state import UsageProblem

_DEFAULTS = TileSettings()

ModelOption = Annotated[
    Optional[Path],
    typer.Option(
        "--model",
        "-m",
        help="Model file (.safetensors, .pth, .pt, .ckpt, .bin) of SRGAN or any architecture spandrel detects"
        " (ESRGAN, Real-ESRGAN Compact, SPAN, SwinIR, DAT, ...), or the name of one in the model folders"
        " (e.g. 4x-UltraSharp); the bundled 4× SRGAN model when omitted.",
        show_default=False,
    ),
]
TileOption = Annotated[
    Optional[int],
    typer.Option(
        "--tile",
        min=16,
        show_default="384 on CPU for SRGAN models, else 160; 512 on CUDA",
        help="Tile size in input pixels: larger is faster but needs more memory.",
    ),
]
OverlapOption = Annotated[
    Optional[int],
    typer.Option(
        "--overlap",
        min=0,
        show_default="the model's, from its architecture",
        help="Pixels of context read around each tile; hides seams.",
    ),
]
BatchOption = Annotated[int, typer.Option("--batch", min=1, help="Tiles run through the network at once.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="auto: fp16 on CUDA; on a CPU bf16 where it runs natively (srgan info says), else fp32.",
        case_sensitive=False,
    ),
]
MaxPixelsOption = Annotated[
    int,
    typer.Option(
        "--max-pixels", min=0, help="Refuse inputs with more pixels than this (decompression bomb guard); 0: no limit."
    ),
]
BackendOption = Annotated[
    BackendKind,
    typer.Option(
        "--backend",
        case_sensitive=False,
        help="auto (a cached TensorRT engine, else a cached compiled one, else eager), eager, "
        "compiled or tensorrt (built into the engine cache when missing).",
    ),
]
EnginesDirOption = Annotated[
    Optional[Path], typer.Option("--engines-dir", help="Engine cache folder; ~/.cache/srgan/engines by default.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object per line on stdout, for programs.")]

DEFAULT_TILE = _DEFAULTS.tile_size
DEFAULT_OVERLAP = _DEFAULTS.overlap
DEFAULT_BATCH = _DEFAULTS.batch_size
DEFAULT_MAX = DEFAULT_MAX_PIXELS


def check_name_template(name: str) -> None:
    """Refuse, as a usage error, an output name template that would fail or misplace outputs.

    Allowed: literal text (no path separator, no NUL; braces doubled), {stem} (required) and
    {scale}, each with an optional format spec that works on text ({scale:>3}); both stand for
    text such as 'photo' and '4' or '2.5'. Run once, before any work, so a bad template is one
    line and exit 2 rather than a failure per file.
    """
    shown = f"--name '{name}'"
    try:
        parsed = list(Formatter().parse(name))
        fields = [(field, spec, conversion) for _, field, spec, conversion in parsed if field is not None]
    except ValueError as error:
        raise UsageProblem(f"{shown}: {error}; write a literal brace as {{{{ or }}}}") from None
    for field, spec, conversion in fields:
        if field not in _NAME_FIELDS or conversion or "{" in (spec or ""):
            written = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise UsageProblem(f"{shown}: '{written}' is not a name field; use {{stem}} and {{scale}}")
    if "stem" not in (field for field, _, _ in fields):
        raise UsageProblem(f"{shown} has no {{stem}}, so every output would get the same name")
    # Checked before formatting: '{stem:>999999999}' would build a gigabyte string per file.
    for field, spec, _ in fields:
        too_wide = [number for number in re.findall(r"\d+", spec or "") if int(number) > _NAME_MAX_BYTES]
        if too_wide:
            raise UsageProblem(
                f"{shown}: '{{{field}:{spec}}}' pads or cuts to {too_wide[0]} characters, but a file name holds"
                f" at most {_NAME_MAX_BYTES} bytes; use a smaller width"
            )
    try:
        names = {name.format(stem=stem, scale=scale) for stem, scale in (("photo", "4"), ("other", "2.5"))}
    except ValueError as error:
        raise UsageProblem(
            f"{shown}: {error}; {{stem}} and {{scale}} are text ('photo', '4', '2.5'),"
            " so use text format specs such as {scale:>3}"
        ) from None
    if any(len(sample.encode("utf-8", "surrogateescape")) > _NAME_MAX_BYTES for sample in names):
        raise UsageProblem(f"{shown}: names would be longer than a file name may be ({_NAME_MAX_BYTES} bytes)")
    if len(names) < 2:
        raise UsageProblem(f"{shown} drops {{stem}}, so every output would get the same name")
    if any(mark in sample for sample in names for mark in _FORBIDDEN_IN_NAMES) or names & {"", ".", ".."}:
        raise UsageProblem(f"{shown}: a name may not hold a path separator or be '..'; outputs stay in the -o folder")


_NAME_FIELDS = ("stem", "scale")
_NAME_MAX_BYTES = 255  # NAME_MAX on Linux, macOS and Windows file systems
_FORBIDDEN_IN_NAMES = tuple(mark for mark in ("/", "\\", os.sep, os.altsep, "\0") if mark)


def tile_settings(tile: int | None, overlap: int | None, batch: int) -> TileSettings:
    """The tile options as settings, or a usage error saying why they do not fit together."""
    try:
        return TileSettings(tile_size=tile, overlap=overlap, batch_size=batch)
    except ValueError as error:
        raise UsageProblem(f"--tile {tile} --overlap {overlap}: {error}") from None


PngCompressionOption = Annotated[
    int,
    typer.Option(
        "--png-compression",
        min=0,
        max=9,
        help="PNG compression: 1-8 zlib's fast run-length matching (all alike), 9 its longest search"
        " (about 3% smaller, 50× slower), 0 none.",
    ),
]
DEFAULT_PNG_COMPRESSION = 6

ScaleOption = Annotated[
    Optional[float],
    typer.Option(
        "--scale",
        "-s",
        min=1.0,
        max=16.0,
        help="Output size as a multiple of the input, e.g. 2 or 3.5 (default: the model's factor); other"
        " factors resample the model's output with Lanczos.",
        show_default=False,
    ),
]
