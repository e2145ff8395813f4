"""``/queues``: every queue's jobs per status and control state; pause and resume a queue,
set its limits.

A pause, resume or setting of limits is an event in the log
(``fq.queue.<queue>.paused|resumed|limits`` in ``FQ_CONTROLS``, see
:mod:`ferrisqueue.log.queuebook`) naming the caller; the workers of the queue stop or go on
pulling its jobs (:mod:`worker.pause`) and start them within its limits (:mod:`worker.limits`).
Submits to a paused or limited queue are accepted as always. Pausing a paused queue (or
resuming an active one, or setting the limits it has) records nothing and answers the state
as it is.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.concurrency import run_in_threadpool

from ferrisqueue.domain.events import Token, utcnow
from ferrisqueue.domain.limits import QueueLimits
from ferrisqueue.domain.principal import Scope
from ferrisqueue.domain.queuecontrol import QueueState
from ferrisqueue.domain.states import JobStatus
from ferrisqueue.errors import NatsUnavailable
from ferrisqueue.log.queuebook import QueueBook
from ferrisqueue.store import queries
from gateway.deps import ActorDep, Authorized, SessionDep
from gateway.nats_link import NatsLink
from gateway.schemas import (
    AUTH_ERRORS,
    BODY_ERRORS,
    Problem,
    QueueControlIn,
    QueueControlOut,
    QueueLimitsIn,
    QueueStats,
)

router = APIRouter(prefix="/queues", tags=["queues"], responses=AUTH_ERRORS)

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "NATS is unreachable; retry later"}
}


def get_queue_book(request: Request) -> QueueBook:
    """The queue controls over the gateway's log; 503 while NATS is away."""
    link: NatsLink = request.app.state.nats
    if link.event_log is None or not link.connected:
        raise NatsUnavailable("the gateway is not connected to NATS")
    return QueueBook(link.event_log)


QueueBookDep = Annotated[QueueBook, Depends(get_queue_book)]
ControlBody = Annotated[QueueControlIn | None, Body()]


@router.get("", dependencies=[Authorized(Scope.JOBS_READ)], responses=_UNAVAILABLE)
async def list_queues(session: SessionDep, book: QueueBookDep) -> list[QueueStats]:
    """Every queue that has jobs or was ever paused: jobs per status (read store) and
    whether it is paused, by whom and since when (the log)."""
    counts = await run_in_threadpool(queries.status_counts, session)
    by_queue: dict[str, dict[JobStatus, int]] = {}
    for (queue, job_status), count in counts.items():
        by_queue.setdefault(queue, dict.fromkeys(JobStatus, 0))[JobStatus(job_status)] = count
    states = await book.states()
    names = sorted(set(by_queue) | set(states))
    return [
        QueueStats(
            **QueueControlOut.of(states.get(q) or QueueState(queue=q)).model_dump(),
            counts=by_queue.get(q) or dict.fromkeys(JobStatus, 0),
        )
        for q in names
    ]


@router.post(
    "/{queue}/pause",
    dependencies=[Authorized(Scope.QUEUES_ADMIN)],
    responses={**BODY_ERRORS, **_UNAVAILABLE},
)
async def pause_queue(
    queue: Token, book: QueueBookDep, actor: ActorDep, body: ControlBody = None
) -> QueueControlOut:
    """Pause the queue: its workers start none of its jobs (running ones finish) until it
    is resumed; submits are still accepted."""
    reason = body.reason if body else None
    return QueueControlOut.of(await book.pause(queue, actor=actor, at=utcnow(), reason=reason))


@router.post(
    "/{queue}/resume",
    dependencies=[Authorized(Scope.QUEUES_ADMIN)],
    responses={**BODY_ERRORS, **_UNAVAILABLE},
)
async def resume_queue(
    queue: Token, book: QueueBookDep, actor: ActorDep, body: ControlBody = None
) -> QueueControlOut:
    """Resume the queue: its workers start its jobs again, oldest first as before."""
    reason = body.reason if body else None
    return QueueControlOut.of(await book.resume(queue, actor=actor, at=utcnow(), reason=reason))


@router.put(
    "/{queue}/limits",
    dependencies=[Authorized(Scope.QUEUES_ADMIN)],
    responses={**BODY_ERRORS, **_UNAVAILABLE},
)
async def set_queue_limits(
    queue: Token, body: QueueLimitsIn, book: QueueBookDep, actor: ActorDep
) -> QueueControlOut:
    """Set the queue's concurrency and rate limits, across all its workers; a limit left
    out (or null) is lifted, so ``{}`` lifts them all. Per-key limits apply to each
    ``concurrency_key`` of the queue's jobs. Jobs already running are not stopped."""
    limits = QueueLimits.model_validate(body.model_dump(exclude={"reason"}))
    state = await book.set_limits(queue, limits, actor=actor, at=utcnow(), reason=body.reason)
    return QueueControlOut.of(state)


@router.get("/{queue}/events", dependencies=[Authorized(Scope.JOBS_READ)], responses=_UNAVAILABLE)
async def queue_events(queue: Token, book: QueueBookDep) -> list[dict[str, Any]]:
    """The queue's audit: every pause, resume and setting of limits, oldest first, with who
    did it."""
    return [
        {"seq": seq, **event.model_dump(mode="json", exclude_none=True)}
        for seq, event in await book.history(queue)
    ]
