"""The per-file work, once: read → upscale → resample → encode → atomic write.

`upscale_file` does it for one file. `FilePipeline` does it for a stream of files with the
stages overlapped: inputs are decoded ahead on reader threads, the calling thread runs the
model (so one thread uses the device), and results are encoded on encoder threads while the
next image is upscaled. The caller says how many threads each stage gets; nothing here sizes
itself from the machine, because a worker may share it. Every front end (the CLI, watch mode,
cluster workers) runs files through this module.

Any exception inside one file's work is that file's failure, reported in its `FileResult`;
it never ends the stream.
"""

from __future__ import annotations

import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import Cancelled, ImageWriteError, Setting, SrganError
from .imageio import DEFAULT_MAX_PIXELS, FORMATS, Picture, format_for, read_image, scaled_size, write_image
from .planning import DEFAULT_NAME
from .upscaler import ProgressCallback, Upscaler


@dataclass(frozen=True)
class OutputOptions:
    """How results are encoded and named.

    image_format: a format key ('png', 'jpeg', 'webp', 'tiff', 'bmp', 'pam'); None: the
        target's extension decides.
    quality: 1-100 for JPEG and WebP (100 makes WebP lossless).
    png_compression: zlib level 0-9.
    scale: output size as a multiple of the input's; None: the model's factor. Other factors
        resample the model's output with Lanczos on the encoding thread.
    name_template: an output's stem, from {stem} (the input's) and {scale}.
    Raises ImageWriteError (or ValueError for out-of-range numbers) when built with values
    that cannot work.
    """

    image_format: str | None = None
    quality: int = 95
    png_compression: int = 6
    scale: float | None = None
    name_template: str = DEFAULT_NAME

    def __post_init__(self) -> None:
        if self.image_format is not None and self.image_format not in FORMATS:
            object.__setattr__(self, "image_format", format_for(Path("."), self.image_format))
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be 1-100, not {self.quality}")
        if not 0 <= self.png_compression <= 9:
            raise ValueError(f"PNG compression must be 0-9, not {self.png_compression}")
        if self.scale is not None and self.scale <= 0:
            raise ValueError(f"output scale must be positive, not {self.scale}")
        if "stem" not in _fields(self.name_template):
            raise ImageWriteError(
                f"output name template '{self.name_template}' has no {{stem}}, so every output would get the same name",
                setting=Setting.NAME_TEMPLATE,
                suggestion="{stem}_x{scale}",
            )

    def output_size(self, height: int, width: int) -> tuple[int, int] | None:
        """(height, width) to resample an input of height × width to, or None for the model's own size."""
        return scaled_size(height, width, self.scale) if self.scale is not None else None


def _fields(template: str) -> set[str]:
    """The field names in a str.format template; none for one that does not parse (so it is refused)."""
    try:
        return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError:
        return set()


def upscale_file(
    upscaler: Upscaler,
    source: Path,
    target: Path,
    options: OutputOptions = OutputOptions(),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> None:
    """Read `source`, upscale it, resample to the options' scale and write `target` atomically.

    Raises ImageReadError, ImageWriteError, BackendError, Cancelled (all SrganError); no file
    is left at `target` when it raises.
    """
    picture = read_image(source, max_pixels)
    pixels = upscaler.upscale(picture.pixels, progress=progress, cancel=cancel)
    _write(replace(picture, pixels=pixels), picture.pixels.shape, target, options)


def _write(result: Picture, input_shape: tuple[int, ...], target: Path, options: OutputOptions) -> None:
    size = options.output_size(*input_shape[:2])
    write_image(result, target, options.image_format, options.quality, options.png_compression, size)


class FileStatus(str, Enum):
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class Stage(str, Enum):
    """Where a file's work failed."""

    READ = "read"
    PLAN = "plan"
    UPSCALE = "upscale"
    WRITE = "write"


@dataclass(frozen=True)
class FileTask:
    """One file to upscale.

    skip_existing: leave the file be when `target` exists by the time it is read (a retried
        task whose earlier attempt finished, or a file written meanwhile).
    key: the caller's own handle, returned untouched in the result.
    """

    source: Path
    target: Path
    skip_existing: bool = False
    key: object = None


@dataclass(frozen=True)
class FileResult:
    """What became of a task.

    error: why it failed (the exception raised, whatever its type) or was skipped (FileSkipped);
    stage: where it failed.
    """

    task: FileTask
    status: FileStatus
    seconds: float = 0.0
    error: Exception | None = None
    stage: Stage | None = None

    @property
    def detail(self) -> str:
        """The reason in one line, naming the file."""
        if self.error is None:
            return ""
        if isinstance(self.error, FileSkipped):
            return str(self.error)
        return str(as_file_error(self.task.source, self.error))


class FileSkipped(Exception):
    """Raised by a loader to leave a file be; the message says why."""


class PipelineObserver(Protocol):
    """Hears about each file's upscale, on the thread that runs the pipeline."""

    def begin(self, task: FileTask) -> None: ...

    def tiles(self, task: FileTask, done: int, total: int) -> None: ...


Loader = Callable[[FileTask], Picture]
"""Decodes a task's input on a reader thread; may raise FileSkipped or any error."""

Planner = Callable[[FileTask], Path]
"""Decides a task's target on the pipeline's thread, right before its upscale (a watcher that
consults its journal); may raise, which makes it the file's failure."""


@dataclass(frozen=True)
class PipelineSettings:
    """Threads and memory of a `FilePipeline`.

    readers: threads decoding inputs; read_ahead: inputs decoded ahead of the one upscaled.
    encoders: threads encoding results (each holds one upscaled image).
    pending_bytes: upscaled images waiting for an encoder may hold this much memory before
        the model waits for them.
    max_pixels: inputs with more pixels are refused (0: no limit).
    idle_seconds: how long to wait before asking again when the task source has nothing ready.
    """

    readers: int = 1
    read_ahead: int = 2
    encoders: int = 1
    pending_bytes: int = 1 << 30
    max_pixels: int = DEFAULT_MAX_PIXELS
    idle_seconds: float = 0.05

    def __post_init__(self) -> None:
        if min(self.readers, self.read_ahead, self.encoders) < 1:
            raise ValueError("a pipeline needs at least one reader, one input read ahead and one encoder")


@dataclass
class _Writing:
    task: FileTask
    future: Future  # type: ignore[type-arg]
    began: float
    nbytes: int


class FilePipeline:
    """Runs a stream of tasks through one `Upscaler` with decoding and encoding overlapped.

    Results come out in the order of the tasks. Memory is bounded: at most `read_ahead`
    decoded inputs, and upscaled results up to `encoders` or `pending_bytes`.
    Not re-entrant: one `run` at a time.
    """

    def __init__(
        self,
        upscaler: Upscaler,
        options: OutputOptions = OutputOptions(),
        settings: PipelineSettings = PipelineSettings(),
        observer: PipelineObserver | None = None,
        loader: Loader | None = None,
        planner: Planner | None = None,
    ) -> None:
        self.upscaler = upscaler
        self.options = options
        self.settings = settings
        self.observer = observer
        self.loader = loader or (lambda task: read_image(task.source, settings.max_pixels))
        self.planner = planner
        self.queued = 0
        """Inputs being decoded or waiting for the model, while `run` runs."""

    def run(
        self,
        tasks: Iterable[FileTask | None],
        stop: threading.Event | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[FileResult]:
        """Process `tasks` and yield one result per task, in order.

        tasks: may be endless; a None item means "nothing ready now" (the pipeline finishes
            what it holds meanwhile and asks again after `idle_seconds`).
        stop: once set, no new upscale starts: inputs read ahead are dropped (they yield no
            result), the image in hand and the results being written are finished and
            yielded, and the generator returns.
        cancel: as `stop`, but the image being upscaled is abandoned too (no result).
        """
        settings = self.settings
        source = iter(tasks)
        reads: deque[tuple[FileTask, Future]] = deque()  # type: ignore[type-arg]
        writing: deque[_Writing | FileResult] = deque()  # in task order; results settled early wait their turn
        exhausted = False
        reader = ThreadPoolExecutor(settings.readers, "srgan-read")
        writer = ThreadPoolExecutor(settings.encoders, "srgan-write")
        try:
            while True:
                stopping = any(event is not None and event.is_set() for event in (stop, cancel))
                idle = False
                while not (exhausted or stopping) and len(reads) < settings.read_ahead:
                    try:
                        task = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    if task is None:
                        idle = True
                        break
                    reads.append((task, reader.submit(self._load, task)))
                self.queued = len(reads)
                while writing and _ready(writing[0]):
                    yield self._collect(writing.popleft())
                if reads and not stopping:
                    task, future = reads.popleft()
                    self.queued = len(reads)
                    outcome = self._upscale(task, future, cancel)
                    if outcome is None:
                        continue  # cancelled: the loop drains what is being written, then ends
                    if isinstance(outcome, FileResult):
                        writing.append(outcome)
                        continue
                    while _busy(writing, settings):
                        yield self._collect(writing.popleft())
                    writing.append(outcome(writer))
                elif writing and (exhausted or stopping):
                    yield self._collect(writing.popleft())
                elif exhausted or stopping:
                    return
                elif writing:
                    head = writing[0]
                    if isinstance(head, _Writing):
                        wait([head.future], timeout=settings.idle_seconds)
                elif idle:
                    time.sleep(settings.idle_seconds)
        finally:
            self.queued = 0
            reader.shutdown(wait=False, cancel_futures=True)
            # Results being written are finished, never cut off: a write is atomic, so what
            # is written is whole, and what is not is not there.
            writer.shutdown(wait=True, cancel_futures=True)

    def _load(self, task: FileTask) -> Picture | FileSkipped:
        if task.skip_existing and task.target.exists():
            return FileSkipped(f"{task.target} exists")
        return self.loader(task)

    def _upscale(
        self, task: FileTask, read: Future, cancel: threading.Event | None  # type: ignore[type-arg]
    ) -> FileResult | Callable[[ThreadPoolExecutor], _Writing] | None:
        """Upscale one task's decoded input on this thread.

        Returns its result when it ends here (skipped or failed), None when cancelled, or a
        function that submits its write to an encoder pool.
        """
        began = time.perf_counter()
        try:
            picture = read.result()
        except FileSkipped as skipped:
            return FileResult(task, FileStatus.SKIPPED, 0.0, skipped)
        except Exception as error:  # noqa: BLE001 - any failure is this file's failure
            return _failed(task, error, began, Stage.READ)
        if isinstance(picture, FileSkipped):
            return FileResult(task, FileStatus.SKIPPED, 0.0, picture)
        if self.planner is not None:
            try:
                task = replace(task, target=self.planner(task))
            except Exception as error:  # noqa: BLE001 - any failure is this file's failure
                return _failed(task, error, began, Stage.PLAN)
        observer = self.observer
        if observer is not None:
            observer.begin(task)
        progress = (lambda done, total: observer.tiles(task, done, total)) if observer is not None else None
        try:
            pixels = self.upscaler.upscale(picture.pixels, progress=progress, cancel=cancel)
        except Cancelled:
            if cancel is not None and cancel.is_set():
                return None
            raise
        except Exception as error:  # noqa: BLE001 - any failure is this file's failure
            return _failed(task, error, began, Stage.UPSCALE)
        result = replace(picture, pixels=pixels)
        shape = picture.pixels.shape
        options = self.options
        return lambda pool: _Writing(
            task, pool.submit(_write, result, shape, task.target, options), began, _nbytes(pixels)
        )

    def _collect(self, writing: _Writing | FileResult) -> FileResult:
        """Wait for a result being written; its outcome."""
        if isinstance(writing, FileResult):
            return writing
        try:
            writing.future.result()
        except Exception as error:  # noqa: BLE001 - any failure is this file's failure
            return _failed(writing.task, error, writing.began, Stage.WRITE)
        return FileResult(writing.task, FileStatus.DONE, time.perf_counter() - writing.began)


def _nbytes(pixels: np.ndarray) -> int:
    return int(pixels.nbytes)


def _ready(item: _Writing | FileResult) -> bool:
    return isinstance(item, FileResult) or item.future.done()


def _busy(writing: deque[_Writing | FileResult], settings: PipelineSettings) -> bool:
    """True while the results being written take every encoder or more memory than allowed."""
    writes = [item for item in writing if isinstance(item, _Writing)]
    return bool(writing) and (
        len(writes) >= settings.encoders or sum(item.nbytes for item in writes) > settings.pending_bytes
    )


def _failed(task: FileTask, error: Exception, began: float, stage: Stage) -> FileResult:
    return FileResult(task, FileStatus.FAILED, time.perf_counter() - began, error, stage)


def as_file_error(source: Path, error: BaseException) -> SrganError:
    """The project's error for a failure in one file's work: itself, or one line naming the file."""
    if isinstance(error, SrganError):
        return error
    lines = str(error).strip().splitlines()
    wrapped = SrganError(f"{source}: unexpected {type(error).__name__}: {lines[0][:160] if lines else 'no message'}")
    wrapped.__cause__ = error
    return wrapped
