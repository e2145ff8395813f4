"""``POST /jobs:batch``: submit up to :data:`MAX_BATCH` jobs in one request.

The whole batch is checked before anything is published: one invalid item (its body, or its
payload against the job type's contract) refuses the batch with 422 naming the item's index,
and one item whose event is larger than ``FQ_MAX_EVENT_BYTES`` refuses it with 413. Then the
``submitted`` events are appended through a bounded pipeline (up to :data:`PIPELINE`
publishes awaiting their ack at once), and the answer comes only when every publish has been
acknowledged or has failed:

* 202: every job is stored;
* 207: some are stored, some are not; each item says which (``accepted``, ``rejected``:
  definitely not stored, safe to resend; ``unknown``: no ack in time, it may be stored);
* 503 + ``Retry-After``: none is stored (NATS is away or refuses them).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ferrisqueue.errors import (
    FerrisQueueError,
    NatsUnavailable,
    PublishOutcomeUnknown,
)
from ferrisqueue.eventlog import EventLog
from ferrisqueue.events import BaseEvent, JobSpec, Submitted, encode_event, utcnow
from ferrisqueue.ids import new_job_id
from ferrisqueue.jobtypes import JobType
from gateway.deps import EventLogDep, JobTypesDep, SettingsDep
from gateway.routes.jobs import check_payload
from gateway.schemas import JobCreate, Problem

router = APIRouter(tags=["jobs"])

MAX_BATCH = 1000
"""Jobs one request may carry."""
PIPELINE = 64
"""Publishes of one batch awaiting their JetStream ack at once."""

_SPEC_FIELDS = (
    frozenset(JobSpec.model_fields) - frozenset(BaseEvent.model_fields) - {"submitted_by"}
)
"""Fields of a job request that a ``submitted`` event carries as they are."""


class BatchCreate(BaseModel):
    """Jobs to run, each as ``POST /jobs`` takes it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"jobs": [{"type": "echo", "payload": {"n": 1}}, {"type": "echo"}]}]
        },
    )

    jobs: list[JobCreate] = Field(min_length=1, max_length=MAX_BATCH)


class BatchItemOut(BaseModel):
    """What became of one job of the batch (``index`` is its place in the request)."""

    index: int
    job_id: str
    queue: str
    outcome: Literal["accepted", "rejected", "unknown"] = Field(
        description="accepted: stored; rejected: not stored (resend it); unknown: no ack in "
        "time, it may be stored."
    )
    status_url: str
    error: str | None = None


class BatchOut(BaseModel):
    """The outcome of every job of the batch, in request order."""

    accepted: int
    failed: int
    jobs: list[BatchItemOut]


@router.post(
    "/jobs:batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchOut,
    responses={
        207: {"model": BatchOut, "description": "Some jobs were stored, some not (see items)"},
        413: {"model": Problem, "description": "A job is larger than FQ_MAX_EVENT_BYTES"},
        422: {
            "description": "An item is invalid (its index is in the error's loc), or the "
            f"batch is empty or has more than {MAX_BATCH} jobs"
        },
        503: {"model": Problem, "description": "NATS is unreachable; nothing was stored"},
    },
)
async def submit_batch(
    body: BatchCreate,
    request: Request,
    event_log: EventLogDep,
    job_types: JobTypesDep,
    settings: SettingsDep,
) -> Any:
    """Append one ``submitted`` event per job; answer when JetStream has acked them all.

    Nothing is published unless every item is valid. No ``Idempotency-Key``: a batch resent
    after a 503 or an ``unknown`` item may create those jobs twice.
    """
    by = request.client.host if request.client else None
    events = [_submitted(i, item, job_types, by) for i, item in enumerate(body.jobs)]
    for index, event in enumerate(events):
        size = len(encode_event(event))
        if size > settings.max_event_bytes:
            return JSONResponse(
                {
                    "detail": f"job {index}: submitted event of {size} bytes exceeds the limit "
                    f"of {settings.max_event_bytes} bytes"
                },
                status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            )
    if not event_log.connected:
        raise NatsUnavailable("not connected to NATS")
    outcomes = await _append_all(event_log, events)
    items = [
        BatchItemOut(
            index=index,
            job_id=event.job_id,
            queue=event.queue,
            outcome=outcome,
            status_url=str(request.url_for("job_status", job_id=event.job_id)),
            error=error,
        )
        for index, (event, (outcome, error)) in enumerate(zip(events, outcomes, strict=True))
    ]
    accepted = sum(item.outcome == "accepted" for item in items)
    answer = BatchOut(accepted=accepted, failed=len(items) - accepted, jobs=items)
    if accepted == len(items):
        return answer
    if accepted == 0:
        first_error = next(item.error for item in items if item.error)
        return JSONResponse(
            {"detail": f"the event log is unavailable, retry later: {first_error}"}
            | answer.model_dump(),
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )
    return JSONResponse(answer.model_dump(), status_code=status.HTTP_207_MULTI_STATUS)


def _submitted(
    index: int, item: JobCreate, job_types: dict[str, JobType], by: str | None
) -> Submitted:
    """The event of one item, or 422 naming the item when its payload breaks the contract."""
    check_payload(job_types, item.type, item.payload, at=("body", "jobs", index, "payload"))
    fields = item.model_dump(exclude={"queue"}, exclude_defaults=True)
    unsupported = sorted(set(fields) - _SPEC_FIELDS)
    if unsupported:
        # Job options a batch cannot express as a `submitted` event yet (a delay, say).
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "jobs", index, name),
                    "msg": "not supported in a batch; use POST /jobs",
                    "input": fields[name],
                }
                for name in unsupported
            ]
        )
    return Submitted(job_id=new_job_id(), queue=item.queue, at=utcnow(), submitted_by=by, **fields)


async def _append_all(
    event_log: EventLog, events: list[Submitted]
) -> list[tuple[Literal["accepted", "rejected", "unknown"], str | None]]:
    """Append every event, at most :data:`PIPELINE` awaiting their ack at once."""
    slots = asyncio.Semaphore(PIPELINE)

    async def one(
        event: Submitted,
    ) -> tuple[Literal["accepted", "rejected", "unknown"], str | None]:
        async with slots:
            try:
                await event_log.append(event)
            except PublishOutcomeUnknown as exc:
                return "unknown", str(exc)
            except FerrisQueueError as exc:
                return "rejected", str(exc)
        return "accepted", None

    return await asyncio.gather(*(one(event) for event in events))
