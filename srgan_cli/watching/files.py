"""Input files as the watcher sees them: which exact content it read, and how it lets go of it.

Files in a watched folder change under the watcher's feet: rewritten in place, replaced by a
rename, swapped for a link. Everything here works on the identity of the file that was read
(device, inode, size, modification time, SHA-256), so that deleting or moving an input after
its upscale touches that content only, never a newer version that took its name meanwhile.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

# A claimed input is renamed to a hidden name beside it while it is checked, so that no other
# file can take its place between the check and the delete or move.
_CLAIM_SUFFIX = ".srgan-claim"
_CLAIMED = re.compile(r"^\.(?P<name>.+)" + re.escape(_CLAIM_SUFFIX) + "$")


@dataclass(frozen=True)
class Snapshot:
    """The identity of the content read from a file; `digest` is its SHA-256, hex."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    digest: str

    def same_file(self, info: os.stat_result) -> bool:
        """True when `info` describes the very file this snapshot was taken of, unchanged."""
        return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns) == (
            self.device,
            self.inode,
            self.size,
            self.mtime_ns,
        )


class NotRegularFile(Exception):
    """The name leads to a pipe, a device or a folder: nothing to read as an image."""


class ChangedWhileRead(Exception):
    """The file's size or time changed while it was hashed: its writer is not done."""


def snapshot(path: Path) -> Snapshot:
    """Hash `path` through one open handle and return what was read.

    Raises NotRegularFile for pipes and devices (opened without blocking, never read),
    ChangedWhileRead when it changed while read, and OSError when it cannot be opened or read.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(descriptor, "rb") as stream:
        before = os.fstat(descriptor)
        if not stat.S_ISREG(before.st_mode):
            raise NotRegularFile(path)
        digest = hashlib.sha256()
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
        after = os.fstat(descriptor)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise ChangedWhileRead(path)
    return Snapshot(after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns, digest.hexdigest())


def unchanged(path: Path, taken: Snapshot) -> bool:
    """True when `path` still names the file `taken` describes, as it was."""
    try:
        return taken.same_file(os.stat(path))
    except OSError:
        return False


def claim(path: Path, digest: str) -> Path | None:
    """Take `path` out of the watched folder's names if it still holds the content `digest`.

    Returns the hidden name it now has (the caller deletes or moves it), or None when the file
    is gone or holds other content (a new version under the same name), which is left in place.
    Raises OSError when the file cannot be renamed.
    """
    hidden = path.with_name(f".{path.name}{_CLAIM_SUFFIX}")
    try:
        os.rename(path, hidden)
    except FileNotFoundError:
        return None
    try:
        same = snapshot(hidden).digest == digest
    except (OSError, NotRegularFile, ChangedWhileRead):
        same = False
    if same:
        return hidden
    # Not what was upscaled: back under its name, or beside a newer file that took the name.
    move_aside(hidden, path)
    return None


def leftover_claims(in_dir: Path, recursive: bool) -> list[tuple[Path, Path]]:
    """Files a killed watcher had claimed and not yet deleted or moved, with their old names."""
    candidates = in_dir.rglob(f".*{_CLAIM_SUFFIX}") if recursive else in_dir.glob(f".*{_CLAIM_SUFFIX}")
    found = []
    for hidden in sorted(candidates):
        match = _CLAIMED.match(hidden.name)
        if match is not None and (hidden.is_file() or hidden.is_symlink()):
            found.append((hidden, hidden.with_name(match["name"])))
    return found


def move_aside(path: Path, target: Path) -> Path:
    """Move `path` to `target`, never over another file: a taken name gets a numbered suffix.

    Creates `target`'s folder. Returns where the file went. Raises OSError when it cannot move.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    candidate, number = target, 1
    while True:
        try:
            # A hard link fails when the name is taken, so no other file is ever replaced.
            os.link(path, candidate, follow_symlinks=False)
        except FileExistsError:
            candidate = target.with_name(f"{target.stem}.{number}{target.suffix}")
            number += 1
            continue
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            # Another file system, or one without hard links: copy, then remove.
            if os.path.lexists(candidate):
                candidate = target.with_name(f"{target.stem}.{number}{target.suffix}")
                number += 1
                continue
            shutil.move(str(path), str(candidate))
            return candidate
        os.unlink(path)
        return candidate
