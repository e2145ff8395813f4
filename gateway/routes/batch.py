"""``POST /jobs:batch``: submit up to :data:`MAX_BATCH` jobs in one request.

Each item is what ``POST /jobs`` takes (a start time ``delay`` or ``run_at`` included), plus
an optional ``idempotency_key`` with the ``Idempotency-Key`` header's meaning: one key, one
job; the same key with the same item gets that job back (``replayed``), with another body it
is refused. Every item goes through the same job builder as a single submit
(:mod:`ferrisqueue.domain.jobbuilder`). An item may wait for other items of the batch:
``after_items`` names them by index (their ids join its ``depends_on``); a cycle, an index
out of range or an item naming itself refuses the batch with 422, and so does a
``depends_on`` parent the log does not know.

The whole batch is checked before anything is published: one invalid item (its body, or its
payload against the job type's contract) refuses the batch with 422 naming the item's index,
and one item whose event is larger than ``FQ_MAX_EVENT_BYTES`` refuses it with 413. Then the
items' keys are claimed (a key already used for another body: 422 naming the item; keys
claimed by the other items stay claimed for the jobs they name, so that the corrected batch,
resent, creates each of them once). Then the events (``submitted``, ``scheduled`` for a
job due later, ``awaiting`` for one with parents) are appended through a bounded pipeline
(up to :data:`PIPELINE` publishes awaiting their ack at once), in waves: each item after the
items it waits for, and an item whose parent item was not stored is not stored either
(``rejected``). The answer comes only when every publish has been acknowledged or has failed:

* 202: every job is stored;
* 207: some are stored, some are not; each item says which (``accepted``, ``rejected``:
  definitely not stored, safe to resend; ``unknown``: no ack in time, it may be stored);
* 503 + ``Retry-After``: none is stored (NATS is away or refuses them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ferrisqueue.domain.dependencies import DependencyCycle, waves
from ferrisqueue.domain.events import MAX_PARENTS, JobSpec, encode_event, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.jobbuilder import START_TIME_AND_PARENTS, JobRefused, build_job
from ferrisqueue.domain.principal import Principal, Scope
from ferrisqueue.errors import (
    FerrisQueueError,
    IdempotencyConflict,
    NatsUnavailable,
    PublishOutcomeUnknown,
)
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.tracing import SpanKind
from gateway.deps import (
    ActorDep,
    Authorized,
    EventLogDep,
    JobTypesDep,
    SettingsDep,
    TracingDep,
    charge_submissions,
    get_idempotency_keys,
)
from gateway.idempotency import MAX_KEY_LENGTH, IdempotencyKeys
from gateway.schemas import AUTH_ERRORS, BODY_ERRORS, RATE_LIMITED, JobCreate, Problem
from gateway.submit import (
    Keyed,
    claim_key,
    parents_refused,
    run_at_of,
    status_url,
    unknown_parents,
    unprocessable,
)

router = APIRouter(tags=["jobs"], responses=AUTH_ERRORS)

MAX_BATCH = 1000
"""Jobs one request may carry."""
PIPELINE = 64
"""Key claims, and publishes awaiting their JetStream ack, of one batch at once."""

Outcome = Literal["accepted", "rejected", "unknown"]
T = TypeVar("T")


class BatchJobCreate(JobCreate):
    """One job of a batch: what ``POST /jobs`` takes, and the key that header would carry."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "echo", "payload": {"n": 1}, "idempotency_key": "order-1234"},
                {"type": "echo", "delay": 30},
                {"type": "echo", "after_items": [0]},
            ]
        },
    )

    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="Retry-safe submission of this job, as the Idempotency-Key header of "
        "POST /jobs (the same keys): every item or request with this key and the same job "
        "gets the same job (for 24 h); the key with another job is refused (422).",
    )
    after_items: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list,
        max_length=MAX_PARENTS,
        exclude_if=lambda items: not items,
        description="Indexes of jobs of this same batch that must succeed first (their ids "
        "join depends_on): [0] waits for the batch's first job. A cycle is refused (422).",
    )

    @model_validator(mode="after")
    def _no_start_time_after_items(self) -> BatchJobCreate:
        if self.after_items and (self.run_at is not None or self.delay is not None):
            raise ValueError(START_TIME_AND_PARENTS)
        if len(set(self.after_items)) != len(self.after_items):
            raise ValueError("after_items names a job twice")
        return self


class BatchCreate(BaseModel):
    """Jobs to run, each as ``POST /jobs`` takes it, each with its own optional key."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"jobs": [{"type": "echo", "payload": {"n": 1}}, {"type": "echo"}]},
                {
                    "jobs": [
                        {"type": "echo", "idempotency_key": "nightly-1", "delay": 60},
                        {"type": "echo", "run_at": "2030-01-01T09:00:00Z"},
                    ]
                },
            ]
        },
    )

    jobs: list[BatchJobCreate] = Field(min_length=1, max_length=MAX_BATCH)


class BatchItemOut(BaseModel):
    """What became of one job of the batch (``index`` is its place in the request)."""

    index: int
    job_id: str
    queue: str
    outcome: Outcome = Field(
        description="accepted: stored; rejected: not stored (resend it); unknown: no ack in "
        "time, it may be stored."
    )
    status_url: str
    error: str | None = None
    # Left out when empty, so that the answer to a batch without start times or keys is
    # what it was before batches took them.
    run_at: datetime | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="When it will run, if it waits (pending: scheduled); absent otherwise.",
    )
    replayed: bool | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Only for an item with an idempotency_key: true when the key already "
        "named this job (no new job was created), as the Idempotent-Replayed header.",
    )


class BatchOut(BaseModel):
    """The outcome of every job of the batch, in request order."""

    accepted: int
    failed: int
    jobs: list[BatchItemOut]


@router.post(
    "/jobs:batch",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Authorized(Scope.JOBS_WRITE)],
    response_model=BatchOut,
    responses={
        **BODY_ERRORS,
        **RATE_LIMITED,
        207: {"model": BatchOut, "description": "Some jobs were stored, some not (see items)"},
        413: {
            "model": Problem,
            "description": "A job is larger than FQ_MAX_EVENT_BYTES, or the body than "
            "FQ_GATEWAY_MAX_BODY_BYTES",
        },
        422: {
            "description": "An item is invalid (its index is in the error's loc), its "
            "idempotency_key was used for another job, or the batch is empty or has more "
            f"than {MAX_BATCH} jobs"
        },
        503: {"model": Problem, "description": "NATS is unreachable; nothing was stored"},
    },
)
async def submit_batch(
    body: BatchCreate,
    request: Request,
    principal: Annotated[Principal, Authorized(Scope.JOBS_WRITE)],
    event_log: EventLogDep,
    job_types: JobTypesDep,
    settings: SettingsDep,
    tracing: TracingDep,
    actor: ActorDep,
) -> Any:
    """Append one creation event per job (``submitted``, or ``scheduled`` when its
    ``run_at``/``delay`` lies ahead); answer when JetStream has acked them all.

    Nothing is published unless every item is valid. An item without ``idempotency_key``
    resent after a 503 or an ``unknown`` outcome may become a second job; one with a key
    cannot.
    """
    now = utcnow()
    order = _store_order(body.jobs)
    ids = [new_job_id() for _ in body.jobs]
    events: list[JobSpec] = []
    for index, item in enumerate(body.jobs):
        parents = [*item.depends_on, *(ids[j] for j in item.after_items)]
        wanted = item.model_copy(update={"depends_on": parents}) if item.after_items else item
        try:
            events.append(build_job(wanted, job_types, job_id=ids[index], now=now, actor=actor))
        except JobRefused as exc:
            raise unprocessable(exc, at=("body", "jobs", index)) from exc
    unknown = await unknown_parents(event_log, (p for item in body.jobs for p in item.depends_on))
    if unknown:
        raise parents_refused(
            (("body", "jobs", index, "depends_on"), parent)
            for index, item in enumerate(body.jobs)
            for parent in item.depends_on
            if parent in unknown
        )
    await charge_submissions(request, principal, len(events))  # each job counts
    for index, event in enumerate(events):
        size = len(encode_event(event))
        if size > settings.max_event_bytes:
            return JSONResponse(
                {
                    "detail": f"job {index}: {event.event} event of {size} bytes exceeds the "
                    f"limit of {settings.max_event_bytes} bytes"
                },
                status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            )
    if not event_log.connected:
        raise NatsUnavailable("not connected to NATS")
    keyed = await _claim_keys(request, event_log, body.jobs, events)
    built = [keyed[i].event if i in keyed else event for i, event in enumerate(events)]
    jobs = _renamed(ids, built)
    outcomes: dict[int, tuple[Outcome, str | None]] = {
        i: ("accepted", None) for i, claim in keyed.items() if claim.stored
    }
    # One span for the batch: its jobs share its trace context.
    with tracing.span(
        "fq submit batch",
        kind=SpanKind.PRODUCER,
        parent=request.headers,
        attributes={"fq.jobs": len(jobs) - len(outcomes)},
    ) as span:
        # Wave by wave, parents before their children: the scheduler must find a job's
        # parents in the log, and a child whose parent was not stored is not stored either.
        for wave in order:
            pending = []
            for i in wave:
                if i in outcomes:
                    continue
                lost = [j for j in body.jobs[i].after_items if outcomes[j][0] != "accepted"]
                if lost:
                    outcomes[i] = ("rejected", f"its parent job #{lost[0]} was not stored")
                else:
                    pending.append(i)
            appended = await _append_all(event_log, [jobs[i] for i in pending], span.headers)
            outcomes |= zip(pending, appended, strict=True)
    items = [
        BatchItemOut(
            index=index,
            job_id=job.job_id,
            queue=job.queue,
            outcome=outcomes[index][0],
            status_url=status_url(request, job.job_id),
            error=outcomes[index][1],
            run_at=run_at_of(job),
            replayed=keyed[index].replayed if index in keyed else None,
        )
        for index, job in enumerate(jobs)
    ]
    accepted = sum(item.outcome == "accepted" for item in items)
    answer = BatchOut(accepted=accepted, failed=len(items) - accepted, jobs=items)
    if accepted == len(items):
        return answer
    if accepted == 0:
        first_error = next(item.error for item in items if item.error)
        return JSONResponse(
            {"detail": f"the event log is unavailable, retry later: {first_error}"}
            | answer.model_dump(mode="json"),
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )
    return JSONResponse(answer.model_dump(mode="json"), status_code=status.HTTP_207_MULTI_STATUS)


def _store_order(items: list[BatchJobCreate]) -> list[list[int]]:
    """The waves to store the items in (parents first); 422 for an ``after_items`` index out
    of range or a cycle."""
    errors = [
        {
            "type": "value_error",
            "loc": ("body", "jobs", i, "after_items"),
            "msg": f"no job #{j} in this batch of {len(items)}"
            if j >= len(items)
            else "a job cannot depend on itself",
            "input": j,
        }
        for i, item in enumerate(items)
        for j in item.after_items
        if j >= len(items) or j == i
    ]
    if errors:
        raise RequestValidationError(errors)
    try:
        return waves([item.after_items for item in items])
    except DependencyCycle as cycle:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "jobs"), "msg": str(cycle), "input": None}]
        ) from cycle


def _renamed(ids: list[str], jobs: list[JobSpec]) -> list[JobSpec]:
    """``jobs`` with ``depends_on`` naming the job each keyed item really is: an item whose
    key named an earlier job is that job, not the id ``ids`` made for it here."""
    renamed = {ids[i]: job.job_id for i, job in enumerate(jobs) if job.job_id != ids[i]}
    if not renamed:
        return jobs
    return [
        job.model_copy(update={"depends_on": [renamed.get(p, p) for p in job.depends_on]})
        for job in jobs
    ]


async def _claim_keys(
    request: Request, event_log: EventLog, items: list[BatchJobCreate], events: list[JobSpec]
) -> dict[int, Keyed]:
    """Claim the key of every item that has one (by index); 422 naming every item whose key
    already names a job of another body. Items that share a key and a body share its job."""
    indexes = [i for i, item in enumerate(items) if item.idempotency_key is not None]
    if not indexes:
        return {}
    # Resolved only for keyed batches: a batch without keys needs no key bucket.
    keys: IdempotencyKeys = await get_idempotency_keys(request)

    def claim(i: int) -> Callable[[], Awaitable[Keyed]]:
        key = items[i].idempotency_key
        assert key is not None
        return lambda: claim_key(keys, event_log, key, items[i], events[i])

    results = dict(zip(indexes, await _bounded([claim(i) for i in indexes]), strict=True))
    failed = [r for r in results.values() if isinstance(r, BaseException)]
    if unexpected := next((r for r in failed if not isinstance(r, IdempotencyConflict)), None):
        raise unexpected  # NATS away: 503, as for a single submit
    if failed:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "jobs", i, "idempotency_key"),
                    "msg": str(result),
                    "input": items[i].idempotency_key,
                }
                for i, result in results.items()
                if isinstance(result, IdempotencyConflict)
            ]
        )
    return {i: r for i, r in results.items() if isinstance(r, Keyed)}


async def _append_all(
    event_log: EventLog, events: list[JobSpec], headers: dict[str, str]
) -> list[tuple[Outcome, str | None]]:
    """Append every event with ``headers``, at most :data:`PIPELINE` awaiting their ack at
    once."""

    def append(event: JobSpec) -> Callable[[], Awaitable[int]]:
        return lambda: event_log.append(event, headers=headers)

    outcomes: list[tuple[Outcome, str | None]] = []
    for result in await _bounded([append(event) for event in events]):
        if isinstance(result, PublishOutcomeUnknown):
            outcomes.append(("unknown", str(result)))
        elif isinstance(result, FerrisQueueError):
            outcomes.append(("rejected", str(result)))
        elif isinstance(result, BaseException):
            raise result
        else:
            outcomes.append(("accepted", None))
    return outcomes


async def _bounded(calls: list[Callable[[], Awaitable[T]]]) -> list[T | BaseException]:
    """Run ``calls`` at most :data:`PIPELINE` at a time; each one's result or exception."""
    slots = asyncio.Semaphore(PIPELINE)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with slots:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls), return_exceptions=True)
