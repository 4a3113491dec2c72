"""The watch service: filesystem events in, one inference worker, atomic outputs, a journal.

Threads: watchdog's observer notes changes; the core's `FilePipeline` hashes and decodes ready
files ahead on two reader threads (with a loader that also consults the journal and plans the
output), runs every upscale on the calling thread, so the model is used by one thread only, and
encodes results on two more. The journal is written and the reporter called only from the
calling thread.

Whatever goes wrong with one file is that file's result, never the watcher's end: a failure of
the input (not an image, too large, a crash in a codec) is recorded and not retried until the
content changes; a failure of the machine (disk full, permissions, I/O errors) is retried later.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from srgan.engines import (
    FilePipeline,
    FileResult,
    FileSkipped,
    FileStatus,
    FileTask,
    InputFile,
    OutputOptions,
    OutputPlan,
    Picture,
    PipelineSettings,
    SrganError,
    Upscaler,
    output_path,
    read_image,
    scale_label,
)

from ..advice import cli_message
from .files import ChangedWhileRead, NotRegularFile, Snapshot, claim, leftover_claims, move_aside, snapshot, unchanged
from .journal import Journal, Status, WatchStateError
from .settings import WatchSettings, folder_identity, remove_partials, resolve_folders
from .policy import (
    OnSuccess,
    excluded_inside,
    inside,
    is_candidate,
    machine_at_fault,
    output_problem,
    scan,
    stays_inside,
)

# How often the loop checks that the watched folder and the journal are still the ones it opened.
_FOLDER_CHECK_SECONDS = 1.0
# Retries of a file deferred again and again wait at most this many times `retry_seconds`.
_RETRY_GROWTH_LIMIT = 32


@dataclass
class WatchTally:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    deferred: int = 0
    seconds: float = 0.0


class WatchReporter(Protocol):
    def started(self, backlog: int, backend: str, mode: str) -> None: ...

    def processing(self, source: str, queued: int) -> None: ...

    def finished(
        self, source: str, output: str, status: str, detail: str, seconds: float, tally: WatchTally
    ) -> None: ...

    def warning(self, message: str) -> None: ...

    def stopped(self, tally: WatchTally) -> None: ...


@dataclass
class _Pending:
    """A file seen changing; ready at `ready_at`, or once stable for the settle interval."""

    stat: tuple[int, int]
    stable_since: float
    ready_at: float | None = None


@dataclass
class _Prepared:
    """A ready file, hashed and decoded on a pool thread. Its outcome, first match wins: `skip`
    (nothing to do), `changed` (read while it changed: wait again), `error`, or `picture`."""

    path: Path
    source: str
    taken: Snapshot | None = None
    picture: Picture | None = None
    skip: str = ""
    changed: bool = False
    error: BaseException | None = None
    recorded: bool = False  # a `started` record was written for it


class _Changed(Exception):
    """The file changed while it was read: wait for it to settle again."""


class _Unplanned(Exception):
    """No output can be planned for the file; `machine`: the machine is at fault (retry later)."""

    def __init__(self, reason: str, machine: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.machine = machine


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns)


def describe(error: BaseException, path: Path) -> str:
    """One line naming the file and what went wrong, for any exception raised on its behalf."""
    if isinstance(error, SrganError):
        return cli_message(error)
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename or path}: {error.strerror}"
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__
    return f"{path}: unexpected error ({text}); please report this"


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
        self.settings = resolve_folders(settings)
        folders = (self.settings.out_dir, self.settings.archive_dir, self.settings.failed_dir)
        self.excluded = excluded_inside(self.settings.in_dir, folders)
        self.upscaler = upscaler
        self.reporter = reporter
        self.tally = WatchTally()
        self._pending: dict[Path, _Pending] = {}
        self._lock = threading.Lock()
        self._in_flight: set[Path] = set()
        self._retry_delay: dict[Path, float] = {}
        self._notes: deque[str] = deque()  # warnings from watchdog's thread, reported by the loop
        self._links_noted: set[Path] = set()
        self._observer: BaseObserver | None = None
        self._in_identity = folder_identity(self.settings.in_dir)

    # Called from watchdog's thread.
    def notice(self, path: Path, kind: str) -> None:
        """A file was created, modified, closed after writing, or moved into place."""
        settings = self.settings
        if not self._wanted(path):
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

    def _wanted(self, path: Path) -> bool:
        """An input to process; a link leading out of IN_DIR is refused with a note, once."""
        settings = self.settings
        if settings.follow_symlinks:
            return is_candidate(path, settings.in_dir, self.excluded, settings.recursive, True)
        if is_candidate(path, settings.in_dir, self.excluded, settings.recursive):
            return True
        if is_candidate(path, settings.in_dir, self.excluded, settings.recursive, True):
            with self._lock:
                if path not in self._links_noted:
                    self._links_noted.add(path)
                    self._notes.append(
                        f"{path}: a link to a file outside the watched folder; not followed (--follow-symlinks)"
                    )
        return False

    def _settle(self, path: Path, delay: float | None = None) -> None:
        """Queue a file once it stops changing (found at start, or read while changing), or after `delay`."""
        stat = _stat(path)
        if stat is not None:
            now = time.monotonic()
            with self._lock:
                self._pending[path] = _Pending(stat, now, ready_at=None if delay is None else now + delay)

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
        """Hash and decode a ready file (on a pool thread); every exception becomes its outcome."""
        prepared = _Prepared(path, os.path.relpath(path, self.settings.in_dir))
        try:
            self._read(prepared)
        except Exception as error:  # whatever happens to one file is that file's outcome
            prepared.error = error
        return prepared

    def _read(self, prepared: _Prepared) -> None:
        settings, path = self.settings, prepared.path
        try:
            prepared.taken = snapshot(path)
        except (FileNotFoundError, NotRegularFile):
            prepared.skip = "vanished"
            return
        except ChangedWhileRead:
            prepared.changed = True
            return
        if not settings.follow_symlinks and not stays_inside(path, settings.in_dir, self.excluded):
            prepared.skip = "vanished"  # turned into a link out of IN_DIR since it was seen
            return
        entry = self.journal.status(prepared.source, prepared.taken.digest)
        if entry is not None and entry.status in (Status.DONE, Status.FAILED):
            prepared.skip = f"already {entry.status.value}"
            return
        try:
            prepared.picture = read_image(path, settings.max_pixels)
        finally:
            # Replaced or rewritten while decoded: what was read may not be what is there.
            prepared.changed = not unchanged(path, prepared.taken)

    def _plan(self, prepared: _Prepared) -> tuple[Path | None, str, bool]:
        """Where the file's result goes, or (None, why not, whether the machine is at fault)."""
        settings = self.settings
        path = prepared.path
        label = scale_label(settings.out_scale, self.upscaler.scale)
        try:
            plan = OutputPlan(settings.out_dir, False, settings.name_template, label, settings.format_key)
            output = output_path(InputFile(path, settings.in_dir), plan)
        except Exception as error:  # a name the template cannot make from this file
            return None, f"{path}: cannot make an output name from it ({describe(error, path)})", False
        problem = output_problem(output, settings.in_dir, settings.out_dir, self.excluded)
        if problem is not None:
            return None, problem, False
        owner = self.journal.owner(str(output))
        if owner is not None and owner != prepared.source:
            return None, f"{output}: already the output of {owner}; rename one of them, or drop --format", False
        if owner is None and os.path.lexists(output):
            # Not ours: never replaced. Retried later, in case it is moved away.
            return None, f"{output}: a file srgan watch did not write is in the way; move it or choose another -o", True
        return output, "", False

    def run(self, stop: threading.Event) -> WatchTally:
        """Process the backlog, then (unless `once`) every new file until `stop` is set."""
        settings = self.settings
        self.journal = Journal(settings.out_dir)
        try:
            warnings, failures = self._recover()
            backlog = self._watch()
            mode = "once, no observer" if settings.once else "polling" if settings.polling else "inotify"
            self.reporter.started(backlog, self.upscaler.backend.name, mode)
            for warning in warnings:
                self.reporter.warning(warning)
            for source, reason in failures:
                self.tally.failed += 1
                self.reporter.finished(source, "", "failed", reason, 0.0, self.tally)
            try:
                self._loop(stop)
            finally:
                self._unwatch()
        finally:
            self.journal.close()
        self.reporter.stopped(self.tally)
        return self.tally

    def _watch(self) -> int:
        """Start observing IN_DIR (unless `once`), then queue what is already there; returns that count."""
        settings = self.settings
        if not settings.once:
            observer = PollingObserver(timeout=0.5) if settings.polling else Observer()
            try:
                observer.schedule(_Events(self), str(settings.in_dir), recursive=settings.recursive)
                observer.start()
            except OSError as error:
                raise WatchStateError(
                    f"{settings.in_dir}: cannot watch this folder ({error.strerror}); --polling may work"
                ) from None
            self._observer = observer
        backlog = scan(settings.in_dir, self.excluded, settings.recursive, True)
        backlog = [path for path in backlog if self._wanted(path)]
        for path in backlog:
            self._settle(path)
        return len(backlog)

    def _unwatch(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None

    def _check_folders(self) -> None:
        """Follow a watched folder that was removed or replaced; stop if the journal was removed."""
        if not self.journal.still_here():
            raise WatchStateError(
                f"{self.journal.folder}: the watcher's state was removed while it ran; restart srgan watch"
            )
        identity = folder_identity(self.settings.in_dir)
        if identity == self._in_identity:
            return
        self._in_identity = identity
        self._unwatch()
        with self._lock:
            self._pending.clear()
        if identity is None:
            self.reporter.warning(f"{self.settings.in_dir}: the watched folder is gone; waiting for it to come back")
            return
        self.reporter.warning(f"{self.settings.in_dir}: the watched folder was replaced; watching the new one")
        self._watch()

    def _recover(self) -> tuple[list[str], list[tuple[str, str]]]:
        """Settle what a killed run left: claimed inputs, temporary outputs, unrecorded work.

        Returns warnings for the user, and (source, reason) of the files now recorded as failed.
        """
        warnings, failures = [], []
        if self.journal.skipped:
            warnings.append(
                f"{self.journal.path}: {self.journal.skipped} unreadable line(s) skipped; the rest was recovered"
            )
        for hidden, original in leftover_claims(self.settings.in_dir, self.settings.recursive):
            warning = self._finish_claim(hidden, original)
            if warning:
                warnings.append(warning)
        for (source, digest), entry in list(self.journal.entries.items()):
            if entry.status is Status.STARTED:
                reason = self._recover_started(source, digest, entry.output, entry.time, entry.attempt)
                if reason:
                    failures.append((source, reason))
        return warnings, failures

    def _finish_claim(self, hidden: Path, original: Path) -> str:
        """Put back an input a killed watcher had renamed aside to delete or move it, and finish
        that when its content is recorded as done; returns a warning, or ""."""
        try:
            restored = move_aside(hidden, original)
            digest = snapshot(restored).digest
        except (OSError, NotRegularFile, ChangedWhileRead) as error:
            return f"{hidden}: cannot put it back as {original.name} ({error})"
        source = os.path.relpath(restored, self.settings.in_dir)
        entry = self.journal.status(source, digest)
        if entry is None or entry.status is not Status.DONE:
            return ""  # not known as done: an input like any other
        note = self._after_success(restored, source, digest)
        return f"{restored}: {note}" if note else ""

    def _recover_started(self, source: str, digest: str, output_name: str, began: float, attempt: int) -> str:
        """Settle work the watcher died on; returns the reason when it is now recorded as failed."""
        output = Path(output_name)
        if not inside(output, self.settings.out_dir):
            return ""  # a journal edited by hand; nothing outside OUT_DIR is touched
        remove_partials(output)
        if output.exists() and output.stat().st_mtime >= began - 1:
            self.journal.done(source, digest, output_name, 0.0)
            return ""
        if attempt < 2:
            return ""  # retried once: the watcher may have been stopped by someone else
        path = self.settings.in_dir / source
        reason = (
            f"{path}: the watcher died twice while processing it (a crash, or killed for memory);"
            " not retried until it changes"
        )
        self.journal.failed(source, digest, reason)
        note = self._set_aside(path, digest)
        return f"{reason}; {note}" if note else reason

    def _loop(self, stop: threading.Event) -> None:
        settings = self.settings
        options = OutputOptions(settings.format_key, settings.quality, settings.png_compression, settings.out_scale)
        threads = PipelineSettings(readers=2, read_ahead=settings.prefetch, encoders=2, max_pixels=settings.max_pixels)
        self._pipeline = FilePipeline(self.upscaler, options, threads, self, self._load, self._target)
        for result in self._pipeline.run(self._ready_tasks(stop), stop=stop):
            self._settled(result)
        while self._notes:
            self.reporter.warning(self._notes.popleft())

    def _ready_tasks(self, stop: threading.Event) -> Iterator[FileTask | None]:
        """Ready files as tasks, None while none is ready; ends on `stop`, or with `once` when all is done.

        Runs on the calling thread between files, so it also passes on notes and checks the folders.
        """
        settings = self.settings
        checked = time.monotonic()
        while not stop.is_set():
            while self._notes:
                self.reporter.warning(self._notes.popleft())
            if not settings.once and time.monotonic() - checked >= _FOLDER_CHECK_SECONDS:
                checked = time.monotonic()
                self._check_folders()
            ready = self._ready(1)
            if ready:
                path = ready[0]
                prepared = _Prepared(path, os.path.relpath(path, settings.in_dir))
                yield FileTask(path, path, key=prepared)  # `_target` plans the real one
                continue
            if settings.once and not self._has_pending() and not self._has_in_flight():
                return
            yield None

    def _load(self, task: FileTask) -> Picture:
        """Hash, check the journal and decode a ready file (on a reader thread).

        Raises FileSkipped (nothing to do), _Changed (read while changing), or whatever reading raised.
        """
        prepared = task.key
        assert isinstance(prepared, _Prepared)
        try:
            self._read(prepared)
        except Exception:
            if prepared.changed:
                raise _Changed() from None
            raise
        if prepared.skip:
            raise FileSkipped(prepared.skip)
        if prepared.changed:
            raise _Changed()
        assert prepared.picture is not None  # read without another outcome
        picture, prepared.picture = prepared.picture, None  # the pipeline holds it from here
        return picture

    def _target(self, task: FileTask) -> Path:
        """Plan a file's output on this thread, right before its upscale, so that the journal
        already holds every earlier file's claim; _Unplanned when none can be planned."""
        prepared = task.key
        assert isinstance(prepared, _Prepared)
        output, problem, machine = self._plan(prepared)
        if output is None:
            raise _Unplanned(problem, machine)
        return output

    # The pipeline's observer: called on this thread as each upscale begins.
    def begin(self, task: FileTask) -> None:
        prepared = task.key
        assert isinstance(prepared, _Prepared) and prepared.taken is not None
        self.journal.started(prepared.source, prepared.taken.digest, str(task.target))
        prepared.recorded = True
        self.reporter.processing(prepared.source, self._pipeline.queued)

    def tiles(self, task: FileTask, done: int, total: int) -> None:
        pass

    def _settled(self, result: FileResult) -> None:
        """Record what became of a file: journal, tally, the input's fate and the reporter."""
        prepared = result.task.key
        assert isinstance(prepared, _Prepared)
        self._release(prepared.path)
        error = result.error
        if result.status is FileStatus.SKIPPED:
            if prepared.skip != "vanished":
                self.tally.skipped += 1
        elif result.status is FileStatus.DONE:
            self._succeeded(prepared, result.task.target, result.seconds)
        elif isinstance(error, _Changed):
            self._settle(prepared.path)  # still being written after all: try again once it settles
        elif isinstance(error, _Unplanned):
            if error.machine:
                self._defer(prepared, error.reason)
            else:
                self._fail(prepared, error.reason)
        elif error is not None:
            self._failure(prepared, error)

    def _has_pending(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def _has_in_flight(self) -> bool:
        with self._lock:
            return bool(self._in_flight)

    def _release(self, path: Path) -> None:
        with self._lock:
            self._in_flight.discard(path)

    def _succeeded(self, prepared: _Prepared, output: Path, seconds: float) -> None:
        assert prepared.taken is not None
        self.journal.done(prepared.source, prepared.taken.digest, str(output), seconds)
        self.tally.done += 1
        self.tally.seconds += seconds
        self._retry_delay.pop(prepared.path, None)
        note = self._after_success(prepared.path, prepared.source, prepared.taken.digest)
        self.reporter.finished(prepared.source, str(output), "done", note, seconds, self.tally)

    def _failure(self, prepared: _Prepared, error: BaseException) -> None:
        """Record an exception raised on a file's behalf: deferred when the machine is at fault."""
        reason = describe(error, prepared.path)
        if machine_at_fault(error):
            self._defer(prepared, reason)
        else:
            self._fail(prepared, reason)

    def _defer(self, prepared: _Prepared, reason: str) -> None:
        """The machine is at fault: record it, and try the file again later (not with `once`)."""
        if prepared.recorded and prepared.taken is not None:
            self.journal.deferred(prepared.source, prepared.taken.digest, reason)
        self.tally.deferred += 1
        if not self.settings.once:
            delay = self._retry_delay.get(prepared.path, self.settings.retry_seconds)
            limit = self.settings.retry_seconds * _RETRY_GROWTH_LIMIT
            self._retry_delay[prepared.path] = min(delay * 2, limit)
            self._settle(prepared.path, delay)
            reason += f"; retrying in {delay:g} s"
        self.reporter.finished(prepared.source, "", "deferred", reason, 0.0, self.tally)

    def _fail(self, prepared: _Prepared, reason: str) -> None:
        """The input is at fault: record it, set it aside, and do not retry this content."""
        digest = prepared.taken.digest if prepared.taken is not None else ""
        self.journal.failed(prepared.source, digest, reason)
        self.tally.failed += 1
        note = self._set_aside(prepared.path, digest) if prepared.taken is not None else ""
        reason += f"; {note}" if note else ""
        self.reporter.finished(prepared.source, "", "failed", reason, 0.0, self.tally)

    def _set_aside(self, path: Path, digest: str) -> str:
        """Move a failed input into the failed folder, if one was given and it still holds `digest`."""
        folder = self.settings.failed_dir
        if folder is None:
            return ""
        return self._dispose(
            path, digest, folder / path.relative_to(self.settings.in_dir), "move it to the failed folder"
        )

    def _after_success(self, path: Path, source: str, digest: str) -> str:
        """Delete or archive the input, if it still holds the content that was upscaled; a note if not."""
        settings = self.settings
        if settings.on_success is OnSuccess.DELETE:
            return self._dispose(path, digest, None, "delete it")
        if settings.on_success is OnSuccess.MOVE and settings.archive_dir is not None:
            return self._dispose(path, digest, settings.archive_dir / source, "archive it")
        return ""

    def _dispose(self, path: Path, digest: str, target: Path | None, action: str) -> str:
        """Delete `path` (target None) or move it to `target`, only if it still holds `digest`.

        Returns "" when done, else a note for the user on why the file was left in place. A
        file that changed is queued again: the events of its new version may have been taken
        for the old one's.
        """
        try:
            hidden = claim(path, digest)
        except OSError as error:
            return f"left in place: cannot {action} ({error.strerror})"
        if hidden is None:
            self._settle(path)
            return "left in place: it changed after it was read, and the new version is processed next"
        try:
            if target is None:
                hidden.unlink()
            else:
                move_aside(hidden, target)
        except OSError as error:
            move_aside(hidden, path)
            return f"left in place: cannot {action} ({error.strerror})"
        return ""
