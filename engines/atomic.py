"""Writing files so that readers see either nothing or the complete file."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


@functools.cache
def _umask() -> int:
    """The process's umask, read without changing it.

    mkstemp creates files readable by the owner only; published files get the usual mode.
    Linux reports the umask in /proc/self/status; elsewhere a short-lived child process reads
    it, so this process's umask is never set, not even for a moment (another thread could be
    creating files then).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    try:
        probe = subprocess.run(["/bin/sh", "-c", "umask"], capture_output=True, text=True, check=False)
        return int(probe.stdout.strip(), 8)
    except (OSError, ValueError):  # no POSIX shell (Windows, where the umask means little)
        return 0o022


# File names hold at most 255 bytes; the temporary name adds 18 to the target's, so a long
# target name is shortened in it (the target keeps its full name).
_NAME_BYTES = 200


def _shortened(name: str) -> str:
    encoded = os.fsencode(name)
    if len(encoded) <= _NAME_BYTES:
        return name
    return os.fsdecode(encoded[:_NAME_BYTES])  # a cut character stays as its raw bytes


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    The temporary name starts with '.' and ends with '.partial' so that folder watchers and
    globs skip it. On any exception the temporary file is removed and the exception re-raised.
    Raises OSError when the folder cannot be written.
    """
    handle, temporary = tempfile.mkstemp(prefix=f".{_shortened(path.name)}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
