"""The task registry: which handler runs which job type.

A handler is ``async def handler(ctx: JobContext, payload) -> result``, or a plain ``def`` of
the same shape, which runs in a worker thread so CPU-bound work cannot block the event loop
(and with it the lease heartbeats). When the job type has a contract
(:mod:`ferrisqueue.jobtypes`), the payload is validated into its model before the handler
runs (an invalid payload fails the job permanently) and a result model is stored as JSON.
Types without a contract get the payload as a ``dict``.

Plugins add handlers through the ``ferrisqueue.tasks`` entry-point group: each entry point
names a ``register(registry, settings)`` function.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from ferrisqueue.domain.ids import is_token
from ferrisqueue.domain.jobbuilder import JobRefused, validate_payload
from ferrisqueue.errors import Permanent, UnknownJobType
from ferrisqueue.jobtypes import JobType
from ferrisqueue.settings import Settings
from worker.context import JobContext

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ferrisqueue.tasks"

Handler = Callable[[JobContext, Any], Any]
Runner = Callable[[JobContext, dict[str, Any]], Awaitable[Any]]


class InvalidPayload(Permanent):
    """The payload does not match the job type's contract; running it again cannot help."""


class TaskRegistry:
    """Maps job types to handlers, checking payloads against the types' contracts."""

    def __init__(self, job_types: dict[str, JobType] | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        self._job_types = job_types or {}

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

    def handler(self, name: str) -> Handler:
        """The handler registered for ``name`` (``KeyError`` if none)."""
        return self._handlers[name]

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)

    def runner(self, name: str) -> Runner:
        """An awaitable call of the handler of ``name``; :class:`UnknownJobType` if none."""
        handler = self._handlers.get(name)
        if handler is None:
            raise UnknownJobType(
                f"no task {name!r} on this worker (known: {', '.join(self.names)})"
            )

        async def run(ctx: JobContext, payload: dict[str, Any]) -> Any:
            # The job builder's contract check: a plain `nats pub` reaches no producer's.
            try:
                argument = validate_payload(self._job_types, name, payload)
            except JobRefused as exc:
                raise InvalidPayload(f"invalid {name} payload: {exc}") from exc
            if inspect.iscoroutinefunction(handler):
                result = await handler(ctx, argument)
            else:
                result = await asyncio.to_thread(handler, ctx, argument)
            return result.model_dump(mode="json") if isinstance(result, BaseModel) else result

        return run


def load_plugins(registry: TaskRegistry, settings: Settings) -> list[str]:
    """Call every installed plugin's ``register(registry, settings)``; returns their names."""
    loaded = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        register = entry.load()
        register(registry, settings)
        loaded.append(entry.name)
        log.info("loaded task plugin %s (%s)", entry.name, entry.value)
    return loaded
