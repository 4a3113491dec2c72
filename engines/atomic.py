"""Writing files so that readers see either nothing or the complete file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# mkstemp creates files readable by the owner only; published files get the usual mode.
_UMASK = os.umask(0)
os.umask(_UMASK)
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
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
