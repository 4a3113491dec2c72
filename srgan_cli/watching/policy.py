"""Which paths the watcher takes as inputs: pure path logic."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

from srgan.engines import IMAGE_EXTENSIONS

# Names that editors, browsers, downloaders and copy tools give files still being written.
TEMPORARY_PATTERNS = ("*.partial", "*.part", "*.tmp", "*.temp", "*.crdownload", "*.download", "*.swp", "*~", "#*#")


def is_candidate(path: Path, in_dir: Path, excluded: Sequence[Path], recursive: bool) -> bool:
    """True when `path` (absolute, resolved) is an input the watcher should process.

    Refused: paths outside `in_dir`, in subfolders unless `recursive`, under any `excluded`
    folder (the output, archive and failed folders, even inside `in_dir`), with a hidden
    component, with a temporary or partial name, or without an image extension.
    """
    try:
        relative = path.relative_to(in_dir)
    except ValueError:
        return False
    if any(path == folder or folder in path.parents for folder in excluded):
        return False
    if not recursive and len(relative.parts) != 1:
        return False
    if any(part.startswith(".") for part in relative.parts):
        return False
    if any(fnmatch.fnmatch(path.name, pattern) for pattern in TEMPORARY_PATTERNS):
        return False
    return path.suffix.lower() in IMAGE_EXTENSIONS


def scan(in_dir: Path, excluded: Sequence[Path], recursive: bool) -> list[Path]:
    """Every candidate already in `in_dir`, sorted: the backlog."""
    candidates = in_dir.rglob("*") if recursive else in_dir.iterdir()
    return sorted(path for path in candidates if path.is_file() and is_candidate(path, in_dir, excluded, recursive))
