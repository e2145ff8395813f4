"""What a running handler knows about its job, and how it reports progress.

Handlers may run more than once for the same job (at-least-once delivery: a worker can die
after the work but before the ack). ``job_id`` and ``attempt`` are there so a handler can
make its effects idempotent, e.g. by using ``job_id`` as an idempotency key downstream or by
writing its output to a path named after the job.

Things opened once per worker (a connection pool, a client) are reached through
:meth:`JobContext.resource`, not through module globals; see :mod:`worker.resources`.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from worker.resources import Resources

T = TypeVar("T")


@dataclass(frozen=True)
class JobContext:
    """Passed to every handler with the job's payload."""

    job_id: str
    queue: str
    type: str
    attempt: int
    """1 on the first delivery; more when a previous worker lost the job (crash, timeout)."""
    worker: str
    _report: Callable[[float, str | None], Coroutine[Any, Any, None]]
    _loop: asyncio.AbstractEventLoop
    resources: Resources = field(default_factory=Resources)
    """What the worker's middleware opened at start (see :meth:`resource`)."""
    trace: Mapping[str, str] = field(default_factory=dict)
    """The job's W3C trace context (``traceparent``, ``tracestate``) as its producer set it;
    empty when it has none. Put it on what the handler sends on (an HTTP call, a job) to
    keep that in the job's trace (:mod:`ferrisqueue.tracing`)."""

    def resource(self, kind: builtins.type[T]) -> T:  # `type` is a field here
        """The worker's resource of type ``kind`` (opened by a middleware at worker start);
        :class:`~worker.resources.MissingResource` if this worker has none."""
        return self.resources.get(kind)

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Record how far the job got (0.0 to 1.0); visible in the job's status."""
        await self._report(fraction, message)

    def progress_from_thread(self, fraction: float, message: str | None = None) -> None:
        """:meth:`progress` for synchronous handlers (they run in a worker thread)."""
        asyncio.run_coroutine_threadsafe(self._report(fraction, message), self._loop).result()
