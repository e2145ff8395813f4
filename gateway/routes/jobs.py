"""``/jobs``: submit, read status, list."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from ferrisqueue.domain.audit import audit_trail
from ferrisqueue.domain.commands import Decision, decide_cancel
from ferrisqueue.domain.events import (
    BaseEvent,
    Canceled,
    CancelRequested,
    Token,
    utcnow,
)
from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.principal import Principal, Scope
from ferrisqueue.domain.states import JobStatus, PendingReason
from ferrisqueue.domain.stored import fold_history
from ferrisqueue.domain.subjects import SCHEDULE_STREAM, timer_subject
from ferrisqueue.errors import FerrisQueueError
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.store import queries
from gateway.deps import (
    ActorDep,
    Authorized,
    EventLogDep,
    IdempotencyDep,
    JobTypesDep,
    SessionDep,
    TracingDep,
    charge_submissions,
    event_log_of,
)
from gateway.idempotency import MAX_KEY_LENGTH
from gateway.schemas import (
    AUTH_ERRORS,
    BODY_ERRORS,
    RATE_LIMITED,
    AuditEntryOut,
    JobAccepted,
    JobCreate,
    JobPage,
    JobStatusOut,
    Problem,
)
from gateway.submit import (
    new_job,
    run_at_of,
    status_url,
    store_job,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=AUTH_ERRORS)

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "NATS is unreachable; retry later"}
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Authorized(Scope.JOBS_WRITE)],
    responses={
        **BODY_ERRORS,
        **RATE_LIMITED,
        **_UNAVAILABLE,
        413: {
            "model": Problem,
            "description": "The job is larger than FQ_MAX_EVENT_BYTES, or the body than "
            "FQ_GATEWAY_MAX_BODY_BYTES",
        },
        422: {
            "description": "The body is not a valid job, or the Idempotency-Key was used for "
            "a different body"
        },
    },
)
async def submit_job(
    body: JobCreate,
    request: Request,
    principal: Annotated[Principal, Authorized(Scope.JOBS_WRITE)],
    response: Response,
    event_log: EventLogDep,
    job_types: JobTypesDep,
    keys: IdempotencyDep,
    tracing: TracingDep,
    actor: ActorDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=MAX_KEY_LENGTH,
            description="Retry-safe submission: every request with the same key and body "
            "gets the same job (for 24 h), however often and concurrently it is sent.",
        ),
    ] = None,
) -> JobAccepted:
    """Append a ``submitted`` event (``scheduled`` when ``run_at``/``delay`` lies ahead: the
    job then waits, pending, until then; ``awaiting`` with ``depends_on``: it waits until
    every parent succeeded); answer only once JetStream has stored it.

    A payload of a known job type must match its contract (422 with the field errors).
    Unknown types are accepted: a worker with a plugin the gateway lacks may run them.
    A parent the event log does not know is 422.
    Without an ``Idempotency-Key``, a retry after a 503 may create a second job.
    """
    event = await new_job(body, job_types, event_log, actor)
    job, replayed = await store_job(
        event,
        body,
        event_log=event_log,
        keys=keys,
        tracing=tracing,
        idempotency_key=idempotency_key,
        charge=lambda: charge_submissions(request, principal, 1),
        headers=request.headers,
    )
    if replayed is not None:
        response.headers["Idempotent-Replayed"] = "true" if replayed else "false"
    # A replay found in the log answers the queue the request names, as it always did.
    queue = body.queue if replayed else job.queue
    # A job due later waits for its timer (the scheduler arms it from the ``scheduled``
    # event); the builder made one due now or in the past a plain ``submitted``.
    url = status_url(request, job.job_id)
    response.headers["Location"] = url
    return JobAccepted(
        job_id=job.job_id,
        queue=queue,
        status=JobStatus.PENDING,
        run_at=run_at_of(job),
        status_url=url,
    )


@router.get(
    "/{job_id}/status",
    dependencies=[Authorized(Scope.JOBS_READ)],
    responses={404: {"model": Problem}, **_UNAVAILABLE},
)
async def job_status(job_id: Token, session: SessionDep, request: Request) -> JobStatusOut:
    """The job's current status.

    Read-your-writes: when the read store has not seen the job yet, its events are folded
    straight from the log, so a status request right after the 202 never answers 404.
    """
    state = await run_in_threadpool(queries.get_job, session, job_id)
    if state is not None:
        return JobStatusOut.from_state(state, "read_store")
    # Resolved here, not as a dependency: reads from the store must work while NATS is down.
    history = await event_log_of(request).history(job_id)
    state = fold_history(history)
    if state is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return JobStatusOut.from_state(state, "event_log")


@router.get(
    "/{job_id}/events",
    dependencies=[Authorized(Scope.JOBS_READ)],
    responses={404: {"model": Problem}, **_UNAVAILABLE},
)
async def job_events(job_id: Token, event_log: EventLogDep) -> list[AuditEntryOut]:
    """The job's complete audit trail, read from the event log itself (the source of truth):
    every message, its actor (who made it happen), when, and whether the fold applied it."""
    history = await event_log.history(job_id)
    if not history:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return [AuditEntryOut.model_validate(entry) for entry in audit_trail(history)]


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Authorized(Scope.JOBS_CANCEL)],
    responses={404: {"model": Problem}, 409: {"model": Problem}, **_UNAVAILABLE},
)
async def cancel_job(job_id: Token, event_log: EventLogDep, actor: ActorDep) -> JobStatusOut:
    """Cancel a job. Pending: it is ``canceled`` at once and never runs. Running: its worker
    cancels the handler (cooperatively: a plain ``def`` handler finishes its work) and
    records ``canceled``; the answer says ``running`` with ``cancel_requested``. Finished:
    409. The decision is :func:`~ferrisqueue.domain.commands.decide_cancel`, carried out by
    :meth:`EventLog.command`: every append is guarded by the job's newest sequence, so a
    cancel racing a worker's start resolves one way or the other, never both."""

    def decide(
        state: JobState | None, _history: Sequence[BaseEvent]
    ) -> Decision[CancelRequested | Canceled]:
        return decide_cancel(state, actor=actor, now=utcnow())

    result = await event_log.command(job_id, decide)
    state = result.state
    if state is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    if (rejection := result.rejection) is not None:
        if result.appended and state.status is JobStatus.CANCELED:
            # Our request was stored, then a worker recorded the cancel before we could.
            return JobStatusOut.from_state(state, "event_log")
        raise HTTPException(status.HTTP_409_CONFLICT, rejection.reason)
    canceled = any(isinstance(event, Canceled) for event in result.events)
    if canceled and state.pending_reason is not PendingReason.QUEUED:
        await _remove_timer(event_log, state.queue, job_id)
    if canceled:  # children waiting for it are canceled in turn by the dependency gate
        await event_log.announce_settled(job_id, actor=actor)
    # The answer is the job as the log now holds it, whatever else was appended since.
    final = fold_history(await event_log.history(job_id))
    assert final is not None
    return JobStatusOut.from_state(final, "event_log")


async def _remove_timer(event_log: EventLog, queue: str, job_id: str) -> None:
    """Purge a waiting job's timer now. Best effort: the scheduler purges it again when it
    reads the ``canceled`` event, and a timer that fires anyway releases a canceled job,
    which the fold rejects."""
    try:
        await event_log.purge(timer_subject(queue, job_id), stream=SCHEDULE_STREAM)
    except FerrisQueueError as exc:
        log.warning("could not remove the timer of canceled job %s now: %s", job_id, exc)


@router.get("", dependencies=[Authorized(Scope.JOBS_READ)])
async def list_jobs(
    session: SessionDep,
    queue: Token | None = None,
    status: JobStatus | None = None,
    type: Token | None = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobPage:
    """Jobs from the read store, newest first, with keyset (cursor) pagination."""
    states = await run_in_threadpool(
        queries.list_jobs,
        session,
        queue=queue,
        status=status.value if status else None,
        type=type,
        before=cursor,
        limit=limit,
    )
    items = [JobStatusOut.from_state(s, "read_store") for s in states]
    return JobPage(items=items, next_cursor=items[-1].job_id if len(items) == limit else None)


types_router = APIRouter(tags=["job types"], responses=AUTH_ERRORS)


@types_router.get("/job-types", dependencies=[Authorized(Scope.JOBS_READ)])
async def list_job_types(job_types: JobTypesDep) -> list[dict[str, Any]]:
    """Every job type with a contract: its payload and result JSON Schemas."""
    return [job_type.schema() for _, job_type in sorted(job_types.items())]
