"""Signals the fault tests wait on: a worker consuming, jobs started, the dispatch drained.

Every wait here watches something the system itself emits (a pull request waiting on the
consumer, an event in the log) and fails after a timeout; none is a bare sleep.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import nats.js.errors
from nats.aio.client import Client
from nats.js.api import ConsumerInfo

from ferrisqueue.domain.events import Failed, Started, Succeeded
from ferrisqueue.domain.subjects import EVENT_STREAM
from tests.support.history import JobTrace
from tests.support.waits import collect_events, wait_until

DISPATCH = "fq-worker-default"
"""The dispatch consumer of the default queue."""


async def consumer_info(nc: Client, consumer: str) -> ConsumerInfo | None:
    """A durable consumer of the event log, or None while nobody has created it yet."""
    try:
        info: ConsumerInfo = await nc.jetstream().consumer_info(EVENT_STREAM, consumer)
    except nats.js.errors.NotFoundError:
        return None
    return info


async def dispatch_info(nc: Client) -> ConsumerInfo | None:
    return await consumer_info(nc, DISPATCH)


async def consuming(nc: Client, *, waiting: int, timeout: float = 30.0) -> None:
    """Wait until ``waiting`` pull requests wait on the dispatch consumer (workers are up)."""
    await wait_until(
        lambda: dispatch_info(nc),
        lambda info: info is not None and (info.num_waiting or 0) >= waiting,
        timeout=timeout,
        what=f"{waiting} workers pulling",
    )


async def drained(nc: Client, *, timeout: float = 30.0) -> ConsumerInfo:
    """Wait until every runnable message was handed to a worker and settled."""
    info = await wait_until(
        lambda: dispatch_info(nc),
        lambda i: i is not None and i.num_pending == 0 and i.num_ack_pending == 0,
        timeout=timeout,
        what="the dispatch consumer to drain",
    )
    assert info is not None
    return info


async def starts(
    nc: Client, until: Callable[[list[dict[str, Any]]], bool], *, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The ``started`` events of every job, read until ``until`` holds."""
    return await collect_events(nc, "fq.job.*.*.started", until=until, timeout=timeout)


def by(worker: str, at_least: int) -> Callable[[list[dict[str, Any]]], bool]:
    """``until`` for :func:`starts`: ``worker`` has started ``at_least`` jobs."""
    return lambda bodies: sum(b["worker"] == worker for b in bodies) >= at_least


def when(body: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(body["at"])


def unfinished_on(trace: JobTrace, worker: str) -> Started | None:
    """The start of ``trace`` on ``worker`` whose attempt recorded no outcome, if any."""
    outcomes = {m.event.attempt for m in trace.messages if isinstance(m.event, Succeeded | Failed)}
    return next((s for s in trace.starts if s.worker == worker and s.attempt not in outcomes), None)
