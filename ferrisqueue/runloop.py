"""Running a service's main coroutine on the fastest event loop available.

uvloop (libuv) cuts the cost of every socket write and timer, which is most of what a
worker or projector does per job; where it is not installed (Windows) the standard loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX platform
        return asyncio.run(main)
    return uvloop.run(main)
