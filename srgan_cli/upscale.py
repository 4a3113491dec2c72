"""`srgan upscale`: files, folders and globs through the shared core."""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from srgan.engines import (
    BackendKind,
    LoadedModel,
    Precision,
    SrganError,
    Upscaler,
    check_output_folder,
    create_upscaler,
    default_model_path,
    format_for,
    load_model,
    read_image,
    scaled_size,
    write_image,
)

from .advice import cli_message
from .jobs import (
    DEFAULT_NAME,
    IMAGE_EXTENSIONS,
    InputFile,
    Job,
    collect_inputs,
    output_is_file,
    plan_jobs,
    scale_label,
)
from .options import (
    check_name_template,
    tile_settings,
    DEFAULT_BATCH,
    BackendOption,
    EnginesDirOption,
    DEFAULT_MAX,
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    DEFAULT_PNG_COMPRESSION,
    PngCompressionOption,
    ScaleOption,
    BatchOption,
    DeviceOption,
    JsonOption,
    MaxPixelsOption,
    ModelOption,
    OverlapOption,
    PrecisionOption,
    TileOption,
)
from .reporting import JsonReporter, Reporter, RichReporter, Tally, printable
from .state import CliState, UsageProblem


def load_model_option(model: Path | None) -> LoadedModel:
    """The model named by --model, or the bundled default."""
    return load_model(model if model is not None else default_model_path())


def upscale(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False)],
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Output file (one input) or folder; next to each input when omitted."),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Look in subfolders; mirror them in the output.")
    ] = False,
    name: Annotated[str, typer.Option("--name", help="Output name template: {stem} and {scale}.")] = DEFAULT_NAME,
    image_format: Annotated[
        Optional[str], typer.Option("--format", "-f", help="png, jpeg, webp, tiff or bmp; else the input's or -o's.")
    ] = None,
    quality: Annotated[
        int, typer.Option("--quality", "-q", min=1, max=100, help="JPEG/WebP quality; 100 is lossless WebP.")
    ] = 95,
    png_compression: PngCompressionOption = DEFAULT_PNG_COMPRESSION,
    scale: ScaleOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace outputs that exist.")] = False,
    model: ModelOption = None,
    tile: TileOption = DEFAULT_TILE,
    overlap: OverlapOption = DEFAULT_OVERLAP,
    batch: BatchOption = DEFAULT_BATCH,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.AUTO,
    backend: BackendOption = BackendKind.AUTO,
    engines_dir: EnginesDirOption = None,
    max_pixels: MaxPixelsOption = DEFAULT_MAX,
    json_lines: JsonOption = False,
) -> None:
    """Upscale images with the SRGAN model."""
    state: CliState = ctx.ensure_object(CliState)
    state.json = json_lines
    check_name_template(name)
    settings = tile_settings(tile, overlap, batch)
    format_key = format_for(Path("."), image_format) if image_format else None
    files, problems = collect_inputs(inputs, recursive)
    to_file = _check_output(output, files, len(inputs))
    loaded = load_model_option(model)
    upscaler = create_upscaler(loaded, device, precision, settings, backend, engines_dir)
    if to_file and format_key is None:
        format_key = format_for(output)
    label = scale_label(scale, loaded.scale)
    jobs = problems + plan_jobs(files, output, to_file, name, label, format_key, overwrite)
    reporter: Reporter = JsonReporter() if json_lines else RichReporter()
    tally = run_jobs(
        jobs,
        upscaler,
        reporter,
        format_key,
        quality,
        max_pixels,
        str(loaded.info.path),
        png_compression,
        scale,
        debug=state.debug,
    )
    if tally.failed:
        raise typer.Exit(1)


def _check_output(output: Path | None, files: list[InputFile], arguments_count: int) -> bool:
    """Whether -o names one output file; a usage error when it cannot serve, before any work."""
    if output is None:
        return False
    try:
        to_file = output_is_file(output, files, arguments_count)
        if not to_file and not output.is_dir() and output.suffix.lower() in IMAGE_EXTENSIONS:
            raise UsageProblem(f"-o {output} names one image file, but the inputs are several; give a folder")
        check_output_folder(output.parent if to_file else output)
    except OSError as error:
        raise UsageProblem(f"-o {output}: {error.strerror or error}; choose another output") from None
    return to_file


def run_jobs(
    jobs: list[Job],
    upscaler: Upscaler,
    reporter: Reporter,
    format_key: str | None,
    quality: int,
    max_pixels: int,
    model_label: str,
    png_compression: int = DEFAULT_PNG_COMPRESSION,
    out_scale: float | None = None,
    debug: bool = False,
) -> Tally:
    """Process every job, reporting as it goes; a failed job never stops the others.

    Any exception raised while reading, upscaling or writing one input (not only the
    project's own errors) is that input's failure, reported in one line; `debug` also prints
    its traceback. KeyboardInterrupt still ends the batch.

    out_scale: output size as a multiple of the input's when it differs from the model's; the
    model's output is resampled to it on the encoding thread.

    Inputs are decoded ahead and results encoded on threads while the next image is upscaled,
    so the device does not wait on codecs. Several results are encoded at once where there are
    cores for it (a GPU upscales faster than one thread writes PNGs); they are reported in order.
    """
    tally = Tally()
    started = time.perf_counter()
    reporter.start(len(jobs), model_label, upscaler.backend.name)
    runnable = [job for job in jobs if not _settled_without_work(job, reporter, tally)]
    encoders = writer_threads()
    try:
        with (
            ThreadPoolExecutor(1, "srgan-read") as reader,
            ThreadPoolExecutor(encoders, "srgan-write") as writer,
        ):
            reads = [reader.submit(read_image, job.source, max_pixels) for job in runnable[:READ_AHEAD]]
            writing: deque[_Writing] = deque()
            for index, job in enumerate(runnable):
                if index + READ_AHEAD < len(runnable):
                    reads.append(reader.submit(read_image, runnable[index + READ_AHEAD].source, max_pixels))
                began = time.perf_counter()
                reporter.begin(job.source)
                try:
                    picture = reads[index].result()
                    pixels = upscaler.upscale(
                        picture.pixels, progress=lambda done, total, job=job: reporter.tiles(job.source, done, total)
                    )
                    result = replace(picture, pixels=pixels)
                    size = scaled_size(*picture.pixels.shape[:2], out_scale) if out_scale is not None else None
                except Exception as error:  # one input's failure, whatever raised it
                    _failed(job, error, began, reporter, tally, debug)
                    continue
                finally:
                    reads[index] = None  # the decoded input is not needed any more
                while writing and (len(writing) >= encoders or sum(item.nbytes for item in writing) > PENDING_BYTES):
                    _collect(writing.popleft(), reporter, tally, debug)
                future = writer.submit(write_image, result, job.target, format_key, quality, png_compression, size)
                writing.append(_Writing(job, future, began, pixels.nbytes))
            while writing:
                _collect(writing.popleft(), reporter, tally, debug)
    finally:
        reporter.close()
    reporter.summary(tally, time.perf_counter() - started)
    return tally


READ_AHEAD = 2
"""Inputs decoded ahead of the one being upscaled."""
PENDING_BYTES = 1 << 30
"""Upscaled images waiting to be encoded may hold this much memory before the loop waits."""


def writer_threads() -> int:
    """Results encoded at once: half the cores, at most 8 (each holds one upscaled image)."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


@dataclass
class _Writing:
    job: Job
    future: Future
    began: float
    nbytes: int


def _settled_without_work(job: Job, reporter: Reporter, tally: Tally) -> bool:
    """Report a job that fails by plan or is skipped; True when nothing is left to do for it."""
    if job.problem is not None or job.target is None:
        reporter.begin(job.source)
        _failed(job, job.problem or f"{job.source}: no output planned", time.perf_counter(), reporter, tally)
        return True
    if job.skip:
        reporter.begin(job.source)
        tally.skipped += 1
        reporter.finish(job.source, job.target, "skipped", f"{job.target} exists", 0.0)
        return True
    return False


def _failed(
    job: Job, failure: str | BaseException, began: float, reporter: Reporter, tally: Tally, debug: bool = False
) -> None:
    reason = failure if isinstance(failure, str) else failure_reason(job.source, failure)
    if debug and isinstance(failure, BaseException):
        # Rich's live display passes stderr writes through above the progress bars.
        sys.stderr.write(printable("".join(traceback.format_exception(failure)), keep_newlines=True))
    tally.failed += 1
    tally.failures.append(reason)
    reporter.finish(job.source, job.target, "failed", reason, time.perf_counter() - began)


def failure_reason(source: Path, error: BaseException) -> str:
    """One line saying why `source` failed: the project's own message, or what was raised."""
    if isinstance(error, SrganError):
        return cli_message(error)
    if isinstance(error, MemoryError):
        return f"{source}: ran out of memory; try a smaller --tile or --max-pixels"
    text = str(error).strip().splitlines()
    detail = f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__
    return f"{source}: failed unexpectedly ({detail}); run with --debug for the traceback"


def _collect(writing: _Writing, reporter: Reporter, tally: Tally, debug: bool = False) -> None:
    """Wait for a result being written and report it."""
    try:
        writing.future.result()
    except Exception as error:  # one input's failure, whatever raised it
        _failed(writing.job, error, writing.began, reporter, tally, debug)
        return
    tally.done += 1
    reporter.finish(writing.job.source, writing.job.target, "done", "", time.perf_counter() - writing.began)
