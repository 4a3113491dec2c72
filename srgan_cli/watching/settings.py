"""How the watcher is set up, and the folder checks done once, before any work."""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, replace
from pathlib import Path

from srgan.engines import DEFAULT_MAX_PIXELS

from ..state import UsageProblem
from .policy import OnSuccess


@dataclass(frozen=True)
class WatchSettings:
    """How the watcher behaves; `resolve_folders` makes the paths absolute and checks them."""

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
    on_success: OnSuccess = OnSuccess.KEEP
    archive_dir: Path | None = None
    failed_dir: Path | None = None
    follow_symlinks: bool = False
    retry_seconds: float = 30.0  # first wait before retrying a file the machine failed
    once: bool = False
    prefetch: int = 3


def resolve_folders(settings: WatchSettings) -> WatchSettings:
    """The settings with every folder absolute and resolved, checked and created.

    Raises UsageProblem, naming the option, for a folder that is a file or cannot be created,
    and for folder choices that would feed the watcher its own files or risk a kept input.
    """
    in_dir = settings.in_dir.resolve()
    if not in_dir.is_dir():
        raise UsageProblem(f"{settings.in_dir}: not a folder; give the folder to watch")
    out_dir = _usable_folder(settings.out_dir, "-o")
    if out_dir == in_dir:
        raise UsageProblem(f"{out_dir}: the output folder is the input folder; choose another -o")
    if settings.archive_dir is not None and settings.on_success is not OnSuccess.MOVE:
        raise UsageProblem(f"--archive-dir {settings.archive_dir}: only used with --on-success move")
    archive_dir = None
    if settings.on_success is OnSuccess.MOVE:
        archive_dir = _usable_folder(settings.archive_dir or in_dir / "done", "--archive-dir")
    failed_dir = _usable_folder(settings.failed_dir, "--failed-dir") if settings.failed_dir else None
    for flag, folder in (("--archive-dir", archive_dir), ("--failed-dir", failed_dir)):
        if folder == in_dir:
            raise UsageProblem(f"{flag} {folder}: is the watched folder, so its files would come back; choose another")
        if folder == out_dir:
            raise UsageProblem(
                f"{flag} {folder}: is the output folder, where outputs could replace inputs; pick another"
            )
    return replace(settings, in_dir=in_dir, out_dir=out_dir, archive_dir=archive_dir, failed_dir=failed_dir)


def _usable_folder(path: Path, flag: str) -> Path:
    if path.exists() and not path.is_dir():
        raise UsageProblem(f"{flag} {path}: is a file, not a folder; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageProblem(f"{flag} {path}: cannot create the folder ({error.strerror}); choose another") from None
    return path.resolve()


def folder_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, to notice it being removed or replaced; None if it is not one."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if path.is_dir() else None


def remove_partials(output: Path) -> None:
    """Remove the temporary files a killed write of `output` left beside it: only names that
    the core's atomic writer makes for this output ('.NAME.' + 8 random characters + '.partial')."""
    own = re.compile(re.escape(f".{output.name}.") + r"[a-z0-9_]{8}\.partial")
    for leftover in output.parent.glob(f".{glob.escape(output.name)}.*.partial"):
        if own.fullmatch(leftover.name):
            leftover.unlink(missing_ok=True)
