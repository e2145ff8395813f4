"""The task registry: which handler runs which job type.

A handler is ``async def handler(ctx: JobContext, payload: dict) -> JSON``, or a plain
``def`` of the same shape, which runs in a thread so it cannot block the event loop.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from ferrisqueue.errors import UnknownJobType
from ferrisqueue.ids import is_token
from worker.context import JobContext

Handler = Callable[[JobContext, dict[str, Any]], Any]


class TaskRegistry:
    """Maps job types to handlers."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def task(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator: register the function as the handler of job type ``name``."""
        if not is_token(name):
            raise ValueError(f"task name {name!r} must be [A-Za-z0-9_-]{{1,64}}")

        def register(handler: Handler) -> Handler:
            if name in self._handlers:
                raise ValueError(f"task {name!r} is registered twice")
            self._handlers[name] = handler
            return handler

        return register

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)

    def runner(self, name: str) -> Callable[[JobContext, dict[str, Any]], Awaitable[Any]]:
        """An awaitable call of the handler of ``name``; :class:`UnknownJobType` if none."""
        handler = self._handlers.get(name)
        if handler is None:
            raise UnknownJobType(
                f"no task {name!r} on this worker (known: {', '.join(self.names)})"
            )
        if inspect.iscoroutinefunction(handler):
            return handler  # type: ignore[no-any-return]
        return lambda ctx, payload: asyncio.to_thread(handler, ctx, payload)
