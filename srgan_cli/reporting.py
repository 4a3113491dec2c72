"""How a batch reports to its user: Rich progress for people, JSON lines for programs."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rich.console import Console

from srgan.engines import Setting, SrganError
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
        self._console.print(f"[dim]model {escape(model)} · {escape(backend)}[/]", soft_wrap=True)
        self._progress.start()
        self._overall = self._progress.add_task("images", total=total)

    def begin(self, source: Path) -> None:
        self._tasks[source] = self._progress.add_task(source.name, total=None)

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
            where = f" on {escape(worker)}" if worker else ""
            self._progress.console.print(
                f"[green]✓[/] {escape(str(source))} → {escape(str(target))} [dim]{seconds:.1f} s{where}[/]",
                soft_wrap=True,
            )
        elif status == "skipped":
            self._progress.console.print(f"[yellow]-[/] {escape(str(source))}: {escape(detail)}", soft_wrap=True)
        else:
            self._progress.console.print(f"[red]✗[/] {escape(detail)}", soft_wrap=True)

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


_SETTING_FLAGS = {
    Setting.RECURSIVE: "--recursive",
    Setting.OUTPUT: "-o",
    Setting.NAME_TEMPLATE: "--name",
    Setting.MAX_PIXELS: "--max-pixels",
    Setting.OUTPUT_FORMAT: "--format",
}


def describe(error: SrganError) -> str:
    """An error's one line, with the flag that governs it where the core named a setting."""
    flag = _SETTING_FLAGS.get(error.setting) if error.setting is not None else None
    if flag is None:
        return str(error)
    advice = f"{flag} {error.suggestion}" if error.suggestion is not None else flag
    return f"{error} ({advice})"
