"""The storage root: the one folder that file-handling jobs may touch.

Paths in payloads are relative to the root. :func:`inside` refuses anything that would land
outside it: absolute paths, ``..``, and symlinks that point out.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

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
