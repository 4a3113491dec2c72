"""What the watch tests share: a recording reporter, a watcher on a thread, a watcher in a process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from srgan.engines import TileSettings, Upscaler, create_upscaler, load_model
from srgan.cli.watching.service import WatchService, WatchTally
from srgan.cli.watching.settings import WatchSettings
from tests.helpers import random_image


def tiny_upscaler(model: Path) -> Upscaler:
    return create_upscaler(load_model(model), "cpu", settings=TileSettings(tile_size=64, overlap=4))


class Recorder:
    def __init__(self) -> None:
        self.results: list[tuple[str, str, str]] = []
        self.warnings: list[str] = []
        self.lock = threading.Lock()

    def started(self, backlog: int, backend: str, mode: str) -> None:
        self.backlog = backlog

    def processing(self, source: str, queued: int) -> None:
        pass

    def finished(self, source: str, output: str, status: str, detail: str, seconds: float, tally: WatchTally) -> None:
        with self.lock:
            self.results.append((source, status, detail))

    def warning(self, message: str) -> None:
        with self.lock:
            self.warnings.append(message)

    def stopped(self, tally: WatchTally) -> None:
        self.tally = tally

    def statuses(self) -> Counter:
        with self.lock:
            return Counter((source, status) for source, status, _ in self.results)


class Running:
    """A WatchService on a thread, stopped (and checked to have stopped) at the end."""

    def __init__(self, model: Path, in_dir: Path, out_dir: Path, upscaler: Upscaler | None = None, **options) -> None:
        upscaler = upscaler or tiny_upscaler(model)
        settings = WatchSettings(
            in_dir=in_dir, out_dir=out_dir, settle_seconds=options.pop("settle_seconds", 0.5), **options
        )
        self.recorder = Recorder()
        self.service = WatchService(settings, upscaler, self.recorder)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_until(lambda: hasattr(self.recorder, "backlog") or not self.thread.is_alive(), 20)

    def finish(self) -> None:
        """Wait for a `once` run to end by itself, then close it."""
        self.thread.join(60)
        self.close()

    def _run(self) -> None:
        try:
            self.service.run(self.stop)
        except BaseException as error:  # surfaced by close()
            self.error = error

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def wait_until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def small_png(path: Path, seed: int = 0, size: int = 8) -> np.ndarray:
    pixels = random_image(size, size, 3, seed=seed)
    Image.fromarray(pixels).save(path)
    return pixels


def journal_done(out_dir: Path) -> Counter:
    lines = (out_dir / ".srgan-watch" / "journal.jsonl").read_text().splitlines()
    return Counter(
        (record["source"], record["digest"]) for record in map(json.loads, lines) if record["status"] == "done"
    )


def start_watch_process(model: Path, in_dir: Path, out_dir: Path, *extra: str) -> subprocess.Popen:
    """`srgan watch` in its own process, JSON lines on its stdout, small tiles and a short settle."""
    command = [sys.executable, "-m", "srgan.cli", "watch", str(in_dir), "-o", str(out_dir), "-m", str(model)]
    command += ["--json", "--settle", "0.2", "--tile", "24", "--overlap", "4", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
