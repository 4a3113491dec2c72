"""What the watcher takes as input, where it may write, and whose fault a failure is: pure logic."""

from __future__ import annotations

import enum
import errno
import fnmatch
from collections.abc import Sequence
from pathlib import Path

from srgan.engines import IMAGE_EXTENSIONS, DeviceOutOfMemory

# Names that editors, browsers, downloaders and copy tools give files still being written.
TEMPORARY_PATTERNS = ("*.partial", "*.part", "*.tmp", "*.temp", "*.crdownload", "*.download", "*.swp", "*~", "#*#")

# OS errors that say something about the machine (space, rights, devices, limits, network
# shares), not about the file being processed: the same input may well succeed later.
ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.EIO,
        errno.ENXIO,
        errno.ENODEV,
        errno.ENOMEM,
        errno.EMFILE,
        errno.ENFILE,
        errno.EAGAIN,
        errno.EBUSY,
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.ENOTCONN,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.ENOLCK,
    }
)


class OnSuccess(str, enum.Enum):
    """What happens to an input once its output is in place."""

    KEEP = "keep"
    MOVE = "move"
    DELETE = "delete"


def inside(path: Path, folder: Path) -> bool:
    """True when `path` is `folder` or lies under it (both absolute, compared as written)."""
    return path == folder or folder in path.parents


def excluded_inside(in_dir: Path, folders: Sequence[Path | None]) -> list[Path]:
    """The folders among `folders` that lie strictly inside `in_dir`: what the watcher must not read.

    A folder that contains IN_DIR (an output folder that is its parent, say) excludes nothing,
    or it would exclude every input.
    """
    return [folder for folder in folders if folder is not None and in_dir in folder.parents]


def is_candidate(
    path: Path, in_dir: Path, excluded: Sequence[Path], recursive: bool, follow_symlinks: bool = False
) -> bool:
    """True when `path` (absolute, under the resolved `in_dir`) is an input the watcher should process.

    Refused: paths outside `in_dir`, in subfolders unless `recursive`, under any `excluded`
    folder (the output, archive and failed folders inside `in_dir`), with a hidden component,
    with a temporary or partial name, without an image extension, and symbolic links (of the
    file or a folder on its way) that lead out of `in_dir` or into an excluded folder, unless
    `follow_symlinks`.
    """
    try:
        relative = path.relative_to(in_dir)
    except ValueError:
        return False
    if any(inside(path, folder) for folder in excluded):
        return False
    if not recursive and len(relative.parts) != 1:
        return False
    if any(part.startswith(".") for part in relative.parts):
        return False
    if any(fnmatch.fnmatch(path.name, pattern) for pattern in TEMPORARY_PATTERNS):
        return False
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    return follow_symlinks or stays_inside(path, in_dir, excluded)


def stays_inside(path: Path, in_dir: Path, excluded: Sequence[Path]) -> bool:
    """True when `path`, with every symbolic link on its way followed, still lies in `in_dir`
    and outside the excluded folders: a link in a shared drop folder must not expose other files."""
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # a loop of links
        return False
    return inside(target, in_dir) and not any(inside(target, folder) for folder in excluded)


def scan(in_dir: Path, excluded: Sequence[Path], recursive: bool, follow_symlinks: bool = False) -> list[Path]:
    """Every candidate already in `in_dir`, sorted: the backlog."""
    candidates = in_dir.rglob("*") if recursive else in_dir.iterdir()
    return sorted(
        path
        for path in candidates
        if is_candidate(path, in_dir, excluded, recursive, follow_symlinks) and path.is_file()
    )


def output_problem(output: Path, in_dir: Path, out_dir: Path, excluded: Sequence[Path]) -> str | None:
    """Why `output` must not be written, or None.

    An output must stay in the output folder, and must not land where the watcher would take
    it as a new input (which would upscale its own results again and again). Symbolic links on
    the way are followed, since that is where the bytes would go.
    """
    target = output.parent.resolve() / output.name
    if not inside(target, out_dir):
        return f"{output}: the output would be written outside the output folder {out_dir}"
    if inside(target, in_dir) and not any(inside(target, folder) for folder in excluded):
        return f"{output}: the output would land in the watched folder and be taken as a new input"
    return None


def machine_at_fault(error: BaseException) -> bool:
    """True when `error` is a failure of the machine rather than of the input: an OS error of
    ENVIRONMENT_ERRNOS anywhere in its chain of causes, or a device out of memory even for the
    smallest tile (with tiling, that is other work holding the device, not the image's size).

    The core raises its own errors `from None`, which hides the OS error from tracebacks but
    keeps it as `__context__`; that is where a disk-full or permission error is found.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DeviceOutOfMemory):
            return True
        if isinstance(current, OSError) and current.errno in ENVIRONMENT_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False
