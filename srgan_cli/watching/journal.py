"""What the watcher has done, kept in OUT_DIR so that a restart neither redoes nor drops work.

The journal is append-only JSON lines, flushed and fsynced after every record. Each input is
identified by its path relative to IN_DIR and the SHA-256 of its content, so new content under
an old name is processed again. A `started` record is written before an upscale and `done`,
`failed` or `deferred` after it. A `started` record with nothing after it means the watcher
died on that file; on restart the work is recorded as done if its output is in place (it is
written atomically), retried once otherwise, and recorded as failed if the watcher died on it
again, so that a file that kills the process cannot keep a supervised watcher in a crash loop.
"""

from __future__ import annotations

import enum
import fcntl
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from srgan.engines import SrganError

STATE_DIR_NAME = ".srgan-watch"


class WatchStateError(SrganError):
    """The state folder cannot be used (locked by another watcher, unreadable, unwritable, removed)."""


class Status(str, enum.Enum):
    """Where the work on one input's content stands."""

    STARTED = "started"  # begun; nothing after it means the watcher died on it
    DONE = "done"
    FAILED = "failed"  # the input is at fault: not retried until its content changes
    DEFERRED = "deferred"  # the machine was at fault (disk full, permissions): retried


@dataclass(frozen=True)
class Entry:
    """The latest record for one (source, digest). `attempt`: how many starts in a row ended
    with the watcher dying; `reason`: why it failed or was deferred."""

    status: Status
    output: str
    time: float
    reason: str = ""
    attempt: int = 1


class Journal:
    """The watcher's record of work, with an exclusive lock on its folder while open.

    `skipped` counts the lines that could not be read back (damaged, foreign or cut short).
    """

    def __init__(self, out_dir: Path) -> None:
        self.folder = out_dir / STATE_DIR_NAME
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.folder / "lock", "w")
        except OSError as error:
            raise WatchStateError(
                f"{self.folder}: cannot create the watcher's state folder ({error.strerror})"
            ) from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise WatchStateError(
                f"{out_dir}: another srgan watch is already writing here; stop it or choose another -o"
            ) from None
        self.path = self.folder / "journal.jsonl"
        self.failures_path = self.folder / "failures.log"
        self.entries: dict[tuple[str, str], Entry] = {}
        self.owners: dict[str, str] = {}  # output path -> the source it was written from
        self.skipped = 0
        try:
            ends_cut_short = self._load()
            self._stream = self.path.open("a", encoding="utf-8", errors="backslashreplace")
            if ends_cut_short:
                # Let the next record start on a line of its own, not glued to a cut one.
                self._stream.write("\n")
        except OSError as error:
            self._lock.close()
            raise WatchStateError(f"{self.path}: cannot open the journal ({error.strerror})") from None
        self._identity = os.fstat(self._stream.fileno()).st_ino

    def _load(self) -> bool:
        """Read every record that can be read; return True when the last line was cut short."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return False
        lines = data.split(b"\n")
        cut_short = lines[-1] != b""
        for line in lines:
            if not line.strip():
                continue
            record = _decode(line)
            if record is None:
                self.skipped += 1
                continue
            key, entry = record
            self._remember(key, entry)
        return cut_short

    def _remember(self, key: tuple[str, str], entry: Entry) -> None:
        self.entries[key] = entry
        if entry.output:
            self.owners[entry.output] = key[0]

    def status(self, source: str, digest: str) -> Entry | None:
        return self.entries.get((source, digest))

    def owner(self, output: str) -> str | None:
        """The input whose result `output` is (or was being written), if this watcher wrote it."""
        return self.owners.get(output)

    def still_here(self) -> bool:
        """False when the journal file was removed or replaced since it was opened."""
        try:
            return self.path.stat().st_ino == self._identity
        except OSError:
            return False

    def _append(self, source: str, digest: str, entry: Entry, **extra: object) -> None:
        record = {
            "status": entry.status.value,
            "source": source,
            "digest": digest,
            "time": entry.time,
            **({"output": entry.output} if entry.output else {}),
            **({"reason": entry.reason} if entry.reason else {}),
            **({"attempt": entry.attempt} if entry.status is Status.STARTED else {}),
            **extra,
        }
        try:
            self._stream.write(json.dumps(record) + "\n")
            self._stream.flush()
            os.fsync(self._stream.fileno())
        except OSError as error:
            raise WatchStateError(
                f"{self.path}: cannot write the journal ({error.strerror}); free space or fix the folder, then restart"
            ) from None
        self._remember((source, digest), entry)

    def started(self, source: str, digest: str, output: str) -> None:
        previous = self.status(source, digest)
        attempt = previous.attempt + 1 if previous is not None and previous.status is Status.STARTED else 1
        self._append(source, digest, Entry(Status.STARTED, output, time.time(), attempt=attempt))

    def done(self, source: str, digest: str, output: str, seconds: float) -> None:
        self._append(source, digest, Entry(Status.DONE, output, time.time()), seconds=round(seconds, 3))

    def deferred(self, source: str, digest: str, reason: str) -> None:
        self._append(source, digest, Entry(Status.DEFERRED, "", time.time(), reason))

    def failed(self, source: str, digest: str, reason: str) -> None:
        self._append(source, digest, Entry(Status.FAILED, "", time.time(), reason))
        try:
            with self.failures_path.open("a", encoding="utf-8", errors="backslashreplace") as stream:
                stream.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{source}\t{reason}\n")
        except OSError as error:
            raise WatchStateError(f"{self.failures_path}: cannot write ({error.strerror})") from None

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError:
            pass  # every record was fsynced as written; nothing is lost
        self._lock.close()


def _decode(line: bytes) -> tuple[tuple[str, str], Entry] | None:
    """One journal line as (source, digest) and its entry, or None when it is not a valid record."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested deeper than the decoder recurses
        return None
    if not isinstance(record, dict):
        return None
    source, digest, moment = record.get("source"), record.get("digest"), record.get("time")
    output, reason, attempt = record.get("output", ""), record.get("reason", ""), record.get("attempt", 1)
    if not all(isinstance(value, str) for value in (source, digest, output, reason)):
        return None
    if not _is_number(moment) or not (isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1):
        return None
    try:
        status = Status(record.get("status"))
    except ValueError:
        return None
    return (source, digest), Entry(status, output, float(moment), reason, attempt)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
