"""The watch service: filesystem events in, one inference worker, atomic outputs, a journal.

Threads: watchdog's observer notes changes; a small pool decodes (and hashes) ready files
ahead of the worker; the calling thread runs every upscale, so the model is used by one
thread only; another pool encodes and writes results. The journal and the reporter are only
touched from the calling thread.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from srgan.engines import (
    DEFAULT_MAX_PIXELS,
    Picture,
    SrganError,
    Upscaler,
    file_sha256,
    read_image,
    scaled_size,
    write_image,
)

from ..advice import cli_message
from ..jobs import InputFile, output_path, scale_label
from .journal import Journal
from .policy import is_candidate, scan


@dataclass(frozen=True)
class WatchSettings:
    """How the watcher behaves; paths are resolved by `WatchService`."""

    in_dir: Path
    out_dir: Path
    recursive: bool = False
    polling: bool = False
    settle_seconds: float = 2.0
    close_grace_seconds: float = 0.3
    name_template: str = "{stem}"
    format_key: str | None = None
    quality: int = 95
    png_compression: int = 6
    out_scale: float | None = None  # output size over input size; None: the model's scale
    max_pixels: int = DEFAULT_MAX_PIXELS
    on_success: str = "keep"
    archive_dir: Path | None = None
    failed_dir: Path | None = None
    once: bool = False
    prefetch: int = 3


@dataclass
class WatchTally:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0


class WatchReporter(Protocol):
    def started(self, backlog: int, backend: str, mode: str) -> None: ...

    def processing(self, source: str, queued: int) -> None: ...

    def finished(
        self, source: str, output: str, status: str, detail: str, seconds: float, tally: WatchTally
    ) -> None: ...

    def stopped(self, tally: WatchTally) -> None: ...


@dataclass
class _Pending:
    """A file seen changing; ready at `ready_at`, or once stable for the settle interval."""

    stat: tuple[int, int]
    stable_since: float
    ready_at: float | None = None


@dataclass
class _Prepared:
    path: Path
    source: str
    digest: str = ""
    picture: Picture | None = None
    skip: str = ""
    error: str = ""
    stat: tuple[int, int] = (0, 0)


@dataclass
class _Written:
    prepared: _Prepared
    output: Path
    started: float
    future: Future = field(repr=False)  # type: ignore[type-arg]


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns)


class _Events(FileSystemEventHandler):
    """Forwards watchdog events to the service's pending set."""

    def __init__(self, service: WatchService) -> None:
        self.service = service

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        kind = event.event_type
        if kind in ("created", "modified", "closed"):
            self.service.notice(Path(os.fsdecode(event.src_path)), kind)
        elif kind == "moved":
            self.service.forget(Path(os.fsdecode(event.src_path)))
            self.service.notice(Path(os.fsdecode(event.dest_path)), kind)
        elif kind == "deleted":
            self.service.forget(Path(os.fsdecode(event.src_path)))


class WatchService:
    """Processes every finished image that appears in IN_DIR, once, until stopped."""

    def __init__(self, settings: WatchSettings, upscaler: Upscaler, reporter: WatchReporter) -> None:
        in_dir, out_dir = settings.in_dir.resolve(), settings.out_dir.resolve()
        if in_dir == out_dir:
            raise SrganError(f"{out_dir}: the output folder is the input folder; choose another -o")
        self.settings = replace(
            settings,
            in_dir=in_dir,
            out_dir=out_dir,
            archive_dir=(settings.archive_dir or in_dir / "done").resolve() if settings.on_success == "move" else None,
            failed_dir=settings.failed_dir.resolve() if settings.failed_dir else None,
        )
        self.excluded = [folder for folder in (out_dir, self.settings.archive_dir, self.settings.failed_dir) if folder]
        self.upscaler = upscaler
        self.reporter = reporter
        self.tally = WatchTally()
        self._pending: dict[Path, _Pending] = {}
        self._lock = threading.Lock()
        self._in_flight: set[Path] = set()

    # Called from watchdog's thread.
    def notice(self, path: Path, kind: str) -> None:
        """A file was created, modified, closed after writing, or moved into place."""
        settings = self.settings
        if not is_candidate(path, settings.in_dir, self.excluded, settings.recursive):
            return
        stat = _stat(path)
        if stat is None:
            return
        now = time.monotonic()
        with self._lock:
            pending = self._pending.get(path)
            if kind in ("closed", "moved") or (kind == "created" and stat[0] > 0 and not settings.polling):
                # Closed after writing, renamed into place, or moved in from elsewhere (which
                # inotify reports as a creation with the content already there): complete.
                self._pending[path] = _Pending(stat, now, ready_at=now + settings.close_grace_seconds)
            elif settings.polling:
                keep = pending is not None and pending.stat == stat
                self._pending[path] = _Pending(stat, pending.stable_since if keep else now)
            else:
                # With inotify a file being written is ready when it is closed, however long
                # its writer pauses; until then it waits here.
                self._pending[path] = _Pending(stat, now, ready_at=float("inf"))

    def forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)

    def _settle(self, path: Path) -> None:
        """Queue a file found on start-up (or after a failed decode) once it stops changing."""
        stat = _stat(path)
        if stat is not None:
            with self._lock:
                self._pending[path] = _Pending(stat, time.monotonic())

    def _ready(self, limit: int) -> list[Path]:
        """Up to `limit` files that are finished, oldest names first; they become in flight."""
        now = time.monotonic()
        ready = []
        with self._lock:
            for path, pending in list(self._pending.items()):
                if path in self._in_flight:
                    continue
                if pending.ready_at is not None:
                    if now >= pending.ready_at:
                        ready.append(path)
                    continue
                stat = _stat(path)
                if stat is None:
                    del self._pending[path]
                elif stat != pending.stat:
                    self._pending[path] = _Pending(stat, now)
                elif now - pending.stable_since >= self.settings.settle_seconds:
                    ready.append(path)
            ready = sorted(ready)[:limit]
            for path in ready:
                del self._pending[path]
                self._in_flight.add(path)
        return ready

    def _prepare(self, path: Path) -> _Prepared:
        """Hash and decode a ready file (on a pool thread)."""
        source = str(path.relative_to(self.settings.in_dir))
        prepared = _Prepared(path, source, stat=_stat(path) or (0, 0))
        try:
            prepared.digest = file_sha256(path)
        except OSError:
            prepared.skip = "vanished"
            return prepared
        entry = self.journal.status(source, prepared.digest)
        if entry is not None and entry.status in ("done", "failed"):
            prepared.skip = f"already {entry.status}"
            return prepared
        try:
            prepared.picture = read_image(path, self.settings.max_pixels)
        except SrganError as error:
            prepared.error = cli_message(error)
        return prepared

    def _target(self, path: Path) -> Path:
        settings = self.settings
        item = InputFile(path, settings.in_dir)
        label = scale_label(settings.out_scale, self.upscaler.scale)
        return output_path(item, settings.out_dir, settings.name_template, label, settings.format_key)

    def run(self, stop: threading.Event) -> WatchTally:
        """Process the backlog, then (unless `once`) every new file until `stop` is set."""
        settings = self.settings
        settings.out_dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(settings.out_dir)
        try:
            self._recover()
            observer = None
            if not settings.once:
                observer = PollingObserver(timeout=0.5) if settings.polling else Observer()
                observer.schedule(_Events(self), str(settings.in_dir), recursive=settings.recursive)
                observer.start()
            backlog = scan(settings.in_dir, self.excluded, settings.recursive)
            for path in backlog:
                self._settle(path)
            self.reporter.started(
                len(backlog), self.upscaler.backend.name, "polling" if settings.polling else "inotify"
            )
            try:
                self._loop(stop)
            finally:
                if observer is not None:
                    observer.stop()
                    observer.join()
        finally:
            self.journal.close()
        self.reporter.stopped(self.tally)
        return self.tally

    def _recover(self) -> None:
        """Remove temporary outputs a killed run left, and settle work it finished unrecorded."""
        for leftover in self.settings.out_dir.rglob(".*.partial"):
            leftover.unlink(missing_ok=True)
        for (source, digest), entry in list(self.journal.entries.items()):
            if entry.status != "started":
                continue
            output = Path(entry.output)
            if output.exists() and output.stat().st_mtime >= entry.time - 1:
                self.journal.done(source, digest, entry.output, 0.0)

    def _loop(self, stop: threading.Event) -> None:
        settings = self.settings
        decoding: deque[Future[_Prepared]] = deque()
        writing: list[_Written] = []
        with (
            ThreadPoolExecutor(2, thread_name_prefix="srgan-decode") as decoder,
            ThreadPoolExecutor(2, thread_name_prefix="srgan-encode") as encoder,
        ):
            while not stop.is_set():
                busy = False
                if len(decoding) < settings.prefetch:
                    for path in self._ready(settings.prefetch - len(decoding)):
                        decoding.append(decoder.submit(self._prepare, path))
                if decoding and decoding[0].done():
                    busy = True
                    written = self._upscale(decoding.popleft().result(), encoder, len(decoding))
                    if written is not None:
                        writing.append(written)
                writing = self._collect(writing)
                if settings.once and not decoding and not writing and not self._has_pending():
                    break
                if not busy:
                    time.sleep(0.05)
            for future in decoding:
                future.cancel()
            for written in writing:
                written.future.exception()
            self._collect(writing)

    def _has_pending(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def _release(self, path: Path) -> None:
        with self._lock:
            self._in_flight.discard(path)

    def _upscale(self, prepared: _Prepared, encoder: ThreadPoolExecutor, queued: int) -> _Written | None:
        if prepared.skip:
            self._release(prepared.path)
            if prepared.skip != "vanished":
                self.tally.skipped += 1
            return None
        if prepared.error:
            self._release(prepared.path)
            if _stat(prepared.path) != prepared.stat:
                self._settle(prepared.path)  # still being written after all: try again once it settles
                return None
            self._fail(prepared, prepared.error)
            return None
        output = self._target(prepared.path)
        self.reporter.processing(prepared.source, queued)
        self.journal.started(prepared.source, prepared.digest, str(output))
        started = time.perf_counter()
        picture = prepared.picture
        assert picture is not None  # prepared without skip or error always holds a picture
        try:
            pixels = self.upscaler.upscale(picture.pixels)
        except SrganError as error:
            self._release(prepared.path)
            self._fail(prepared, cli_message(error))
            return None
        result = replace(picture, pixels=pixels)
        settings = self.settings
        size = scaled_size(*picture.pixels.shape[:2], settings.out_scale) if settings.out_scale is not None else None
        future = encoder.submit(
            write_image, result, output, settings.format_key, settings.quality, settings.png_compression, size
        )
        return _Written(prepared, output, started, future)

    def _collect(self, writing: list[_Written]) -> list[_Written]:
        still = []
        for written in writing:
            if not written.future.done():
                still.append(written)
                continue
            prepared = written.prepared
            self._release(prepared.path)
            error = written.future.exception()
            if error is not None:
                if not isinstance(error, SrganError):
                    raise error
                self._fail(prepared, cli_message(error))
                continue
            seconds = time.perf_counter() - written.started
            self.journal.done(prepared.source, prepared.digest, str(written.output), seconds)
            self.tally.done += 1
            self.tally.seconds += seconds
            self._after_success(prepared.path)
            self.reporter.finished(prepared.source, str(written.output), "done", "", seconds, self.tally)
        return still

    def _fail(self, prepared: _Prepared, reason: str) -> None:
        self.journal.failed(prepared.source, prepared.digest, reason)
        self.tally.failed += 1
        if self.settings.failed_dir is not None:
            _move(prepared.path, self.settings.failed_dir / prepared.source)
        self.reporter.finished(prepared.source, "", "failed", reason, 0.0, self.tally)

    def _after_success(self, path: Path) -> None:
        if self.settings.on_success == "delete":
            path.unlink(missing_ok=True)
        elif self.settings.on_success == "move" and self.settings.archive_dir is not None:
            _move(path, self.settings.archive_dir / path.relative_to(self.settings.in_dir))


def _move(path: Path, target: Path) -> None:
    """Move a file, never over another one: a taken name gets a numbered suffix."""
    target.parent.mkdir(parents=True, exist_ok=True)
    candidate, number = target, 1
    while candidate.exists():
        candidate = target.with_name(f"{target.stem}.{number}{target.suffix}")
        number += 1
    shutil.move(str(path), str(candidate))
