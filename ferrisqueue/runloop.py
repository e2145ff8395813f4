"""Running a service's main coroutine on the fastest event loop available, and ending a
helper task safely.

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


async def reap(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended, without raising its failure and without
    swallowing a cancellation of the caller's own task.

    ``task.cancel(); with suppress(CancelledError): await task`` (the usual idiom) also
    swallows a cancel that reaches the *caller* during that await: the caller then runs on
    as if nobody had asked it to stop (a projector that kept retrying after its process was
    told to end). ``asyncio.wait`` never raises the task's exception, and raises the
    caller's own cancellation."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not report it as never retrieved
