"""`srgan upscale`: files, folders and globs through the shared core."""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from srgan.engines import (
    DEFAULT_NAME,
    IMAGE_EXTENSIONS,
    BackendKind,
    FilePipeline,
    FileResult,
    FileStatus,
    FileTask,
    InputSurvey,
    Job,
    LoadedModel,
    OutputOptions,
    OutputPlan,
    PipelineSettings,
    Precision,
    SrganError,
    Upscaler,
    check_output_folder,
    create_upscaler,
    default_model_path,
    format_for,
    iter_inputs,
    load_model,
    resolve_model,
    output_is_file,
    plan_jobs,
    scale_label,
    survey_inputs,
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
from .advice import cli_message
from .cluster import Address, ClusterSettings, WorkerSettings, import_ray, run_on_cluster
from .reporting import JsonReporter, Reporter, RichReporter, Tally, printable
from .state import CliState, UsageProblem


def load_model_option(model: Path | None, precision: Precision = Precision.AUTO) -> LoadedModel:
    """The model named by --model (a file, or a name in the model folders), or the bundled default.

    Raises UsageProblem when --precision names one the model's architecture does not run in.
    """
    loaded = load_model(resolve_model(model) if model is not None else default_model_path())
    if precision is not Precision.AUTO and precision not in loaded.info.precisions:
        choices = ", ".join(sorted(choice.value for choice in loaded.info.precisions))
        raise UsageProblem(
            f"--precision {precision.value}: {loaded.info.path} is a {loaded.info.architecture} model, which does not"
            f" run correctly in {precision.value}; use auto or one of {choices}"
        )
    return loaded


def upscale(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False)],
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="Output file (one input) or folder (a trailing / says folder); next to each input when omitted.",
        ),
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
    cluster: Annotated[
        Optional[str],
        typer.Option(
            "--cluster",
            help="Run on Ray: local (start Ray here), auto (the cluster in RAY_ADDRESS or this machine's),"
            " or ray://HOST:PORT. Inputs and outputs must be on storage every node sees.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers", min=1, help="Ray workers, each with its own model; default: one per GPU, else one per node."
        ),
    ] = None,
    gpus_per_worker: Annotated[
        Optional[float],
        typer.Option(
            "--gpus-per-worker",
            min=0.0,
            help="GPUs per Ray worker (0.5 shares one between two); default 1 where the cluster has GPUs, else 0.",
        ),
    ] = None,
    cpus_per_worker: Annotated[
        Optional[float],
        typer.Option(
            "--cpus-per-worker",
            min=0.25,
            help="CPU cores per Ray worker; default: this machine's cores shared out with --cluster local, else 1.",
        ),
    ] = None,
) -> None:
    """Upscale images with the SRGAN model."""
    state: CliState = ctx.ensure_object(CliState)
    state.json = json_lines
    check_name_template(name)
    settings = tile_settings(tile, overlap, batch)
    format_key = format_for(Path("."), image_format) if image_format else None
    if cluster is None and (workers, gpus_per_worker, cpus_per_worker) != (None, None, None):
        raise UsageProblem("--workers, --gpus-per-worker and --cpus-per-worker need --cluster")
    if cluster is not None:
        import_ray()  # before any work: a missing Ray is a one-line error
    survey = survey_inputs(inputs, recursive)
    # Kept as text until here: a Path would drop the trailing separator that asks for a folder.
    folder_asked = output is not None and output.endswith(("/", os.sep))
    output_path = Path(output) if output is not None else None
    to_file = _check_output(output_path, survey, len(inputs), folder_asked)
    loaded = load_model_option(model, precision)
    upscaler = None if cluster else create_upscaler(loaded, device, precision, settings, backend, engines_dir)
    if to_file and format_key is None:
        format_key = format_for(output_path)
    options = OutputOptions(format_key, quality, png_compression, scale, name)
    plan = OutputPlan(output_path, to_file, name, scale_label(scale, loaded.scale), format_key, overwrite)
    jobs = plan_jobs(iter_inputs(inputs, recursive), plan, survey.digests)
    reporter: Reporter = JsonReporter() if json_lines else RichReporter()
    if upscaler is not None:
        model_label = str(loaded.info.path)
        tally = run_jobs(jobs, survey.items, upscaler, reporter, options, max_pixels, model_label, state.debug)
    else:
        where = ClusterSettings(cluster or "local", workers, gpus_per_worker, cpus_per_worker)
        worker = WorkerSettings(
            loaded.info.path.resolve(),
            device,
            precision,
            settings,
            backend,
            engines_dir,
            options,
            max_pixels,
            cpus_per_worker or _default_cpus(where),
        )
        tally = run_jobs_on_cluster(
            jobs, survey.items, where, worker, reporter, overwrite, str(loaded.info.path), state.debug
        )
    if tally.failed:
        raise typer.Exit(1)


def _check_output(output: Path | None, survey: InputSurvey, arguments_count: int, folder_asked: bool) -> bool:
    """Whether -o names one output file; a usage error when it cannot serve, before any work.

    folder_asked: -o ended with a separator, so it names a folder whatever its suffix.
    """
    if output is None:
        return False
    try:
        to_file = not folder_asked and output_is_file(output, survey.first, survey.files, arguments_count)
        if not to_file and not folder_asked and not output.is_dir() and output.suffix.lower() in IMAGE_EXTENSIONS:
            raise UsageProblem(f"-o {output} names one image file, but the inputs are several; give a folder")
        check_output_folder(output.parent if to_file else output)
    except OSError as error:
        raise UsageProblem(f"-o {output}: {error.strerror or error}; choose another output") from None
    return to_file


def _default_cpus(cluster: ClusterSettings) -> float:
    """Cores per worker: this machine's shared out among the workers when Ray runs here, else 1."""
    if cluster.address == Address.LOCAL.value:
        return max(1, (os.cpu_count() or 1) // (cluster.workers or 1))
    return 1


def run_jobs_on_cluster(
    jobs: Iterable[Job],
    total: int,
    cluster: ClusterSettings,
    worker: WorkerSettings,
    reporter: Reporter,
    overwrite: bool,
    model_label: str,
    debug: bool = False,
) -> Tally:
    """`run_jobs` on Ray workers: the same reports, summary and tally, each result naming its worker."""
    tally = Tally()
    started = time.perf_counter()
    tasks = (replace(task, skip_existing=not overwrite) for task in _runnable(jobs, reporter, tally))
    try:
        run_on_cluster(
            tasks,
            total,
            model_label,
            cluster,
            worker,
            reporter,
            lambda result, name: report_result(result, reporter, tally, name or None, debug),
        )
    finally:
        reporter.close()
    reporter.summary(tally, time.perf_counter() - started)
    return tally


def run_jobs(
    jobs: Iterable[Job],
    total: int,
    upscaler: Upscaler,
    reporter: Reporter,
    options: OutputOptions,
    max_pixels: int,
    model_label: str,
    debug: bool = False,
) -> Tally:
    """Process every job through the core's pipeline, reporting as it goes; a failed job never
    stops the others. Jobs that need no work (skipped, refused by plan) are reported as they come.

    Any exception raised while reading, upscaling or writing one input (not only the project's
    own errors) is that input's failure, reported in one line; `debug` also prints its
    traceback. KeyboardInterrupt still ends the batch."""
    tally = Tally()
    started = time.perf_counter()
    reporter.start(total, model_label, upscaler.backend.name)
    settings = PipelineSettings(
        readers=1, read_ahead=READ_AHEAD, encoders=writer_threads(), pending_bytes=PENDING_BYTES, max_pixels=max_pixels
    )
    pipeline = FilePipeline(upscaler, options, settings, _Progress(reporter))
    try:
        for result in pipeline.run(_runnable(jobs, reporter, tally)):
            report_result(result, reporter, tally, debug=debug)
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


class _Progress:
    """The pipeline's per-file events, passed on to a reporter."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def begin(self, task: FileTask) -> None:
        self.reporter.begin(task.source)

    def tiles(self, task: FileTask, done: int, total: int) -> None:
        self.reporter.tiles(task.source, done, total)


def _runnable(jobs: Iterable[Job], reporter: Reporter, tally: Tally) -> Iterator[FileTask]:
    """The jobs that need work, as tasks; the others are reported on the way."""
    for job in jobs:
        if job.problem is not None or job.target is None:
            reporter.begin(job.source)
            reason = cli_message(job.problem) if job.problem is not None else f"{job.source}: no output planned"
            _count(tally, FileStatus.FAILED, reason)
            reporter.finish(job.source, job.target, "failed", reason, 0.0)
        elif job.skip:
            reporter.begin(job.source)
            _count(tally, FileStatus.SKIPPED, "")
            reporter.finish(job.source, job.target, "skipped", f"{job.target} exists", 0.0)
        else:
            yield FileTask(job.source, job.target)


def report_result(
    result: FileResult, reporter: Reporter, tally: Tally, worker: str | None = None, debug: bool = False
) -> None:
    """Count a pipeline result and tell the reporter; `worker` names the cluster worker that did it."""
    error = result.error
    if result.status is FileStatus.FAILED and error is not None:
        detail = failure_reason(result.task.source, error)
        if debug:
            # Rich's live display passes stderr writes through above the progress bars.
            sys.stderr.write(printable("".join(traceback.format_exception(error)), keep_newlines=True))
    else:
        detail = result.detail
    _count(tally, result.status, detail)
    task = result.task
    reporter.finish(task.source, task.target, result.status.value, detail, result.seconds, worker)


def _count(tally: Tally, status: FileStatus, detail: str) -> None:
    if status is FileStatus.DONE:
        tally.done += 1
    elif status is FileStatus.SKIPPED:
        tally.skipped += 1
    else:
        tally.failed += 1
        tally.failures.append(detail)


def failure_reason(source: Path, error: BaseException) -> str:
    """One line saying why `source` failed: the project's own message, or what was raised."""
    if isinstance(error, SrganError):
        return cli_message(error)
    if isinstance(error, MemoryError):
        return f"{source}: ran out of memory; try a smaller --tile or --max-pixels"
    text = str(error).strip().splitlines()
    detail = f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__
    return f"{source}: failed unexpectedly ({detail}); run with --debug for the traceback"
