"""The storage root: the one folder that file-handling jobs may touch.

Paths in payloads are relative to the root. :func:`inside` refuses anything that would land
outside it: absolute paths, ``..``, and symlinks that point out.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ferrisqueue.errors import Permanent


class OutsideStorageRoot(Permanent):
    """A payload named a path outside the storage root: refused, never retried."""


def inside(root: Path, relative: str) -> Path:
    """``root / relative`` resolved, or :class:`OutsideStorageRoot` if it escapes ``root``."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or not relative.strip():
        raise OutsideStorageRoot(f"{relative!r} must be a relative path inside the storage root")
    base = root.resolve()
    candidate = (base / pure).resolve()  # follows symlinks, so a link pointing out is caught
    if candidate != base and base not in candidate.parents:
        raise OutsideStorageRoot(f"{relative!r} resolves outside the storage root")
    return candidate


@contextmanager
def atomic_writer(target: Path, *, text: bool = False, mode: int = 0o644) -> Iterator[IO[Any]]:
    """A file to write ``target`` through: readers see the old file or the whole new one,
    never a part, and a job that runs again simply replaces its own output.

    The data goes to a temporary file beside ``target`` (same file system), is fsynced, and
    is moved into place with ``os.replace``; if the block raises, the temporary file goes.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with (
            os.fdopen(fd, "w", encoding="utf-8", newline="") if text else os.fdopen(fd, "wb")
        ) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
