"""What the watcher has done, kept in OUT_DIR so that a restart neither redoes nor drops work.

The journal is append-only JSON lines, flushed and fsynced after every record. Each input is
identified by its path relative to IN_DIR and the SHA-256 of its content, so new content under
an old name is processed again. A `started` record is written before an upscale and `done`
after its output has been renamed into place; a crash between the two is resolved on restart:
the output, written atomically, exists and is newer than the `started` record, so the work is
recorded as done instead of being redone.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from srgan.engines import SrganError

STATE_DIR_NAME = ".srgan-watch"


class WatchStateError(SrganError):
    """The state folder cannot be used (locked by another watcher, unreadable, unwritable)."""


@dataclass(frozen=True)
class Entry:
    status: str  # started, done or failed
    output: str
    time: float
    reason: str = ""


class Journal:
    """The watcher's record of work, with an exclusive lock on its folder while open."""

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
        self._load()
        self._stream = self.path.open("a")

    def _load(self) -> None:
        if not self.path.exists():
            return
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
                key = (record["source"], record["digest"])
                self.entries[key] = Entry(
                    record["status"], record.get("output", ""), record["time"], record.get("reason", "")
                )
            except (json.JSONDecodeError, KeyError, TypeError):
                # A line cut short by a crash mid-write is the only expected damage; skip it.
                continue

    def status(self, source: str, digest: str) -> Entry | None:
        return self.entries.get((source, digest))

    def _append(self, **record: object) -> None:
        self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()
        os.fsync(self._stream.fileno())
        key = (str(record["source"]), str(record["digest"]))
        self.entries[key] = Entry(
            str(record["status"]),
            str(record.get("output", "")),
            float(record["time"]),  # type: ignore[arg-type]
            str(record.get("reason", "")),
        )

    def started(self, source: str, digest: str, output: str) -> None:
        self._append(status="started", source=source, digest=digest, output=output, time=time.time())

    def done(self, source: str, digest: str, output: str, seconds: float) -> None:
        self._append(
            status="done", source=source, digest=digest, output=output, time=time.time(), seconds=round(seconds, 3)
        )

    def failed(self, source: str, digest: str, reason: str) -> None:
        self._append(status="failed", source=source, digest=digest, time=time.time(), reason=reason)
        with self.failures_path.open("a") as stream:
            stream.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{source}\t{reason}\n")

    def close(self) -> None:
        self._stream.close()
        self._lock.close()
