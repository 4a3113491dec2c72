"""How a batch reports to its user: Rich progress for people, JSON lines for programs."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rich.console import Console

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


# C0 and C1 controls, DEL, bidirectional overrides and isolates (they reorder what follows),
# and lone surrogates (bytes of a file name that were not UTF-8).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: object, keep_newlines: bool = False) -> str:
    """`text` safe for a terminal: control characters and the like shown as escapes (\\x1b).

    A file name may hold an escape sequence that would recolour, retitle or clear the terminal,
    or a right-to-left override that disguises its extension; bytes that are not UTF-8 arrive
    as lone surrogates that no terminal encoding accepts. JSON output keeps the exact text.
    """
    return _UNPRINTABLE.sub(lambda match: _escape_character(match.group(), keep_newlines), str(text))


def _escape_character(character: str, keep_newlines: bool) -> str:
    code = ord(character)
    if keep_newlines and character in "\n\t":
        return character
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for one undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: object) -> str:
    """`text` as Rich markup that prints it literally and safely (see `printable`)."""
    return escape(printable(text))


@dataclass
class Tally:
    """Counts of finished jobs by status."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


class Reporter(Protocol):
    """Receives the events of a batch upscale."""

    def start(self, total: int, model: str, backend: str) -> None: ...

    def begin(self, source: Path) -> None: ...

    def tiles(self, source: Path, done: int, total: int) -> None: ...

    def finish(
        self, source: Path, target: Path | None, status: str, detail: str, seconds: float, worker: str | None = None
    ) -> None: ...

    def summary(self, tally: Tally, seconds: float) -> None: ...

    def close(self) -> None: ...


class JsonReporter:
    """One JSON object per line on stdout; every object has an "event" key."""

    def __init__(self, stream=None) -> None:
        self._stream = stream or sys.stdout

    def _emit(self, **event: object) -> None:
        self._stream.write(json.dumps(event) + "\n")
        self._stream.flush()

    def start(self, total: int, model: str, backend: str) -> None:
        self._emit(event="start", total=total, model=model, backend=backend)

    def begin(self, source: Path) -> None:
        self._emit(event="begin", input=str(source))

    def tiles(self, source: Path, done: int, total: int) -> None:
        self._emit(event="progress", input=str(source), done=done, total=total, fraction=round(done / total, 4))

    def finish(
        self, source: Path, target: Path | None, status: str, detail: str, seconds: float, worker: str | None = None
    ) -> None:
        event: dict[str, object] = dict(
            event="result",
            input=str(source),
            output=str(target) if target else None,
            status=status,
            detail=detail,
            seconds=round(seconds, 3),
        )
        if worker is not None:
            event["worker"] = worker
        self._emit(**event)

    def summary(self, tally: Tally, seconds: float) -> None:
        self._emit(
            event="summary", done=tally.done, skipped=tally.skipped, failed=tally.failed, seconds=round(seconds, 3)
        )

    def close(self) -> None:
        pass


class RichReporter:
    """A progress bar per image and one overall, then one line per result and a summary."""

    def __init__(self, console: Console | None = None, errors: Console | None = None) -> None:
        self._console = console or Console(file=sys.stdout)  # this stdout, even if it is redirected later
        self._errors = errors or Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._errors,
            transient=True,
        )
        self._overall = None
        self._tasks: dict[Path, TaskID] = {}

    def start(self, total: int, model: str, backend: str) -> None:
        self._console.print(f"[dim]model {shown(model)} · {shown(backend)}[/]", soft_wrap=True)
        self._progress.start()
        self._overall = self._progress.add_task("images", total=total)

    def begin(self, source: Path) -> None:
        self._tasks[source] = self._progress.add_task(printable(source.name), total=None)

    def tiles(self, source: Path, done: int, total: int) -> None:
        if source in self._tasks:
            self._progress.update(self._tasks[source], completed=done, total=total)

    def finish(
        self, source: Path, target: Path | None, status: str, detail: str, seconds: float, worker: str | None = None
    ) -> None:
        task = self._tasks.pop(source, None)
        if task is not None:
            self._progress.remove_task(task)
        if self._overall is not None:
            self._progress.advance(self._overall)
        if status == "done":
            where = f" on {shown(worker)}" if worker else ""
            self._progress.console.print(
                f"[green]✓[/] {shown(source)} → {shown(target)} [dim]{seconds:.1f} s{where}[/]", soft_wrap=True
            )
        elif status == "skipped":
            self._progress.console.print(f"[yellow]-[/] {shown(source)}: {shown(detail)}", soft_wrap=True)
        else:
            self._progress.console.print(f"[red]✗[/] {shown(detail)}", soft_wrap=True)

    def summary(self, tally: Tally, seconds: float) -> None:
        self.close()
        parts = [f"{tally.done} upscaled"]
        if tally.skipped:
            parts.append(f"{tally.skipped} skipped (already there; --overwrite to redo)")
        if tally.failed:
            parts.append(f"[red]{tally.failed} failed[/]")
        self._console.print(", ".join(parts) + f" in {seconds:.1f} s")

    def close(self) -> None:
        self._progress.stop()

