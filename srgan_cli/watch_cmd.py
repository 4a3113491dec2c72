"""`srgan watch`: upscale every finished image that appears in a folder, unattended."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from srgan.engines import BackendKind, Precision, create_upscaler, format_for

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
from .state import CliState
from .upscale import load_model_option
from .watching.policy import OnSuccess
from .watching.service import WatchService, WatchTally
from .watching.settings import WatchSettings, resolve_folders


def shown(text: str) -> str:
    """`text` safe to print on a terminal: control characters (escape sequences in a hostile
    file name) and bytes that are not UTF-8 are shown as escapes instead of acting on it."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(
        char if char.isprintable() or char == " " else char.encode("unicode_escape").decode("ascii") for char in safe
    )


class JsonWatchReporter:
    """One JSON object per line on stdout, for supervisors and log collectors."""

    def _emit(self, **event: object) -> None:
        sys.stdout.write(json.dumps({"time": round(time.time(), 3), **event}) + "\n")
        sys.stdout.flush()

    def started(self, backlog: int, backend: str, mode: str) -> None:
        self._emit(event="start", backlog=backlog, backend=backend, mode=mode)

    def processing(self, source: str, queued: int) -> None:
        self._emit(event="processing", input=source, queued=queued)

    def finished(self, source: str, output: str, status: str, detail: str, seconds: float, tally: WatchTally) -> None:
        self._emit(
            event="result", input=source, output=output or None, status=status, detail=detail, seconds=round(seconds, 3)
        )

    def warning(self, message: str) -> None:
        self._emit(event="warning", message=message)

    def stopped(self, tally: WatchTally) -> None:
        self._emit(event="stop", done=tally.done, failed=tally.failed, deferred=tally.deferred, skipped=tally.skipped)


class LiveWatchReporter:
    """A Rich live status: counts, throughput and the current file, plus a line per result."""

    def __init__(self, in_dir: Path, out_dir: Path) -> None:
        self.console = Console(highlight=False)
        self.folders = f"{shown(str(in_dir))} → {shown(str(out_dir))}"
        self.current, self.queued, self.began = "", 0, time.perf_counter()
        self.tally = WatchTally()
        self.mode, self.backend = "", ""
        self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=True)

    def _table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        minutes = max((time.perf_counter() - self.began) / 60, 1e-9)
        table.add_row("watching", escape(self.folders), f"[dim]{self.mode}, {escape(self.backend)}[/]")
        table.add_row(
            "done",
            str(self.tally.done),
            f"failed {self.tally.failed}   deferred {self.tally.deferred}   queued {self.queued}"
            f"   {self.tally.done / minutes:.1f} files/min",
        )
        table.add_row("now", escape(shown(self.current)) or "[dim]waiting for files (Ctrl-C stops)[/]", "")
        return table

    def started(self, backlog: int, backend: str, mode: str) -> None:
        self.mode, self.backend = mode, backend
        self.console.print(f"{backlog} file(s) already waiting; {escape(backend)}, {mode}")
        self.live.start()

    def processing(self, source: str, queued: int) -> None:
        self.current, self.queued = source, queued
        self.live.update(self._table())

    def finished(self, source: str, output: str, status: str, detail: str, seconds: float, tally: WatchTally) -> None:
        self.tally, self.current = tally, ""
        if status == "done":
            note = f" [yellow]({escape(shown(detail))})[/]" if detail else ""
            self.console.print(
                f"[green]✓[/] {escape(shown(source))} → {escape(shown(output))} [dim]{seconds:.1f} s[/]{note}",
                soft_wrap=True,
            )
        elif status == "deferred":
            self.console.print(f"[yellow]↻[/] {escape(shown(detail))}", soft_wrap=True)
        else:
            self.console.print(f"[red]✗[/] {escape(shown(detail))}", soft_wrap=True)
        self.live.update(self._table())

    def warning(self, message: str) -> None:
        self.console.print(f"[yellow]![/] {escape(shown(message))}", soft_wrap=True)

    def stopped(self, tally: WatchTally) -> None:
        self.live.stop()
        self.console.print(
            f"stopped: {tally.done} upscaled, {tally.failed} failed, {tally.deferred} to retry,"
            f" {tally.skipped} already done"
        )


def watch(
    ctx: typer.Context,
    in_dir: Annotated[Path, typer.Argument(help="Folder to watch.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the results (may be inside IN_DIR).")],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Watch subfolders; mirror them in the output.")
    ] = False,
    polling: Annotated[
        bool, typer.Option("--polling", help="Poll instead of inotify: network shares, container mounts.")
    ] = False,
    settle: Annotated[
        float,
        typer.Option(
            "--settle",
            min=0.0,
            help="Seconds a file's size and time must hold still "
            "before it counts as finished (polling, and files found at start).",
        ),
    ] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Process what is there and exit (cron, CI).")] = False,
    on_success: Annotated[
        OnSuccess, typer.Option("--on-success", help="What to do with an input once upscaled.")
    ] = OnSuccess.KEEP,
    archive_dir: Annotated[
        Optional[Path],
        typer.Option("--archive-dir", help="Where --on-success move puts inputs; IN_DIR/done by default."),
    ] = None,
    failed_dir: Annotated[Optional[Path], typer.Option("--failed-dir", help="Move inputs that fail here.")] = None,
    follow_symlinks: Annotated[
        bool,
        typer.Option("--follow-symlinks", help="Process links to files outside IN_DIR (by default they are ignored)."),
    ] = False,
    retry_after: Annotated[
        float,
        typer.Option(
            "--retry-after",
            min=0.1,
            help="Seconds before retrying a file that failed because of the machine (disk full, permissions,"
            " I/O errors); doubles on each further failure.",
        ),
    ] = 30.0,
    name: Annotated[str, typer.Option("--name", help="Output name template: {stem} and {scale}.")] = "{stem}",
    image_format: Annotated[Optional[str], typer.Option("--format", "-f", help="png, jpeg, webp, tiff or bmp.")] = None,
    quality: Annotated[int, typer.Option("--quality", "-q", min=1, max=100, help="JPEG/WebP quality.")] = 95,
    png_compression: PngCompressionOption = DEFAULT_PNG_COMPRESSION,
    scale: ScaleOption = None,
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
    """Watch a folder and upscale every finished image that appears in it."""
    state: CliState = ctx.ensure_object(CliState)
    state.json = json_lines
    check_name_template(name)
    tiles = tile_settings(tile, overlap, batch)
    settings = WatchSettings(
        in_dir=in_dir,
        out_dir=output,
        recursive=recursive,
        polling=polling,
        settle_seconds=settle,
        name_template=name,
        format_key=format_for(Path("."), image_format) if image_format else None,
        quality=quality,
        png_compression=png_compression,
        out_scale=scale,
        max_pixels=max_pixels,
        on_success=on_success,
        archive_dir=archive_dir,
        failed_dir=failed_dir,
        follow_symlinks=follow_symlinks,
        retry_seconds=retry_after,
        once=once,
    )
    settings = resolve_folders(settings)  # before the model loads: a bad folder is told at once
    upscaler = create_upscaler(load_model_option(model), device, precision, tiles, backend, engines_dir)
    reporter = JsonWatchReporter() if json_lines else LiveWatchReporter(in_dir, output)
    service = WatchService(settings, upscaler, reporter)
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        tally = service.run(stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if once and (tally.failed or tally.deferred):
        raise typer.Exit(1)
