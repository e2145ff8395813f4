"""What ``POST /jobs`` and ``POST /jobs:batch`` share around the job builder: its refusal as a
422 answer, and the claim of an ``Idempotency-Key``.

A key names one job for 24 h (:mod:`gateway.idempotency`): the first request with it
claims it for the job it is about to create; a later one with the same body gets that job
(``replayed``), one with another body is refused (:class:`IdempotencyConflict`, 422). The
single submit takes the key as a header, a batch as each item's ``idempotency_key``; both
claim in the same bucket, so a key means the same job whichever way it is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.datastructures import URLPath

from ferrisqueue.domain.events import JobSpec, Scheduled, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.jobbuilder import JobRefused, JobRequest, build_job
from ferrisqueue.jobtypes import JobType
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.logs import bind_log_fields
from ferrisqueue.tracing import SpanKind, Tracing
from gateway.idempotency import IdempotencyKeys, fingerprint


def unprocessable(refused: JobRefused, *, at: tuple[Any, ...]) -> RequestValidationError:
    """The builder's refusal as FastAPI's 422, each error located under ``at`` (where the
    request sits in the body), as if the body's own validation had found it."""
    return RequestValidationError([{**e, "loc": (*at, *e["loc"])} for e in refused.errors])


@dataclass(frozen=True, slots=True)
class Keyed:
    """A keyed request after its claim."""

    event: JobSpec
    """The job's creation event: the one the log holds (``stored``), else the one to append."""
    replayed: bool
    """The key already named a job: this is that job, no new one."""
    stored: bool
    """The log already has the job: nothing to append."""


async def unknown_parents(event_log: EventLog, parents: Iterable[str]) -> set[str]:
    """The ``parents`` the event log holds no event of (a child of such a job could only be
    canceled). NATS away: :class:`NatsUnavailable` (503)."""
    wanted = list(dict.fromkeys(parents))
    newest = await asyncio.gather(*(event_log.newest(parent) for parent in wanted))
    return {parent for parent, found in zip(wanted, newest, strict=True) if found is None}


def parents_refused(unknown: Iterable[tuple[tuple[Any, ...], str]]) -> RequestValidationError:
    """The 422 naming each unknown parent at its place (``loc``) in the request."""
    return RequestValidationError(
        [
            {
                "type": "value_error",
                "loc": loc,
                "msg": f"unknown parent job {parent}: no such job in the event log",
                "input": parent,
            }
            for loc, parent in unknown
        ]
    )


def status_url(request: Request, job_id: str) -> str:
    """The absolute URL of the job's status (what ``request.url_for("job_status", ...)``
    answers, without a walk through every route to find its path)."""
    return str(URLPath(f"/jobs/{job_id}/status").make_absolute_url(request.base_url))


async def new_job(
    body: JobRequest, job_types: Mapping[str, JobType], event_log: EventLog, actor: str
) -> JobSpec:
    """The event that creates the job ``body`` (a single submission) asks for, stamped now
    with a new id. :class:`RequestValidationError` (422) when the builder refuses it or it
    names a parent the log does not hold. Nothing is written."""
    try:
        event: JobSpec = build_job(body, job_types, job_id=new_job_id(), now=utcnow(), actor=actor)
    except JobRefused as exc:
        raise unprocessable(exc, at=("body",)) from exc
    if event.depends_on and (unknown := await unknown_parents(event_log, event.depends_on)):
        raise parents_refused((("body", "depends_on"), parent) for parent in sorted(unknown))
    return event


async def store_job(
    event: JobSpec,
    body: JobRequest,
    *,
    event_log: EventLog,
    keys: IdempotencyKeys,
    tracing: Tracing,
    idempotency_key: str | None,
    charge: Callable[[], Awaitable[None]],
    headers: Mapping[str, str],
) -> tuple[JobSpec, bool | None]:
    """Charge the caller's rate limit, claim ``idempotency_key`` (if any) and append
    ``event`` unless the key names a job the log already has; answers the job and whether
    it was a replay (None without a key). ``headers``: the request's, whose traceparent
    the job carries when tracing is off. Raises what the log, the key store or the rate
    limit raise (the app's exception handlers answer them)."""
    await charge()
    replayed: bool | None = None
    if idempotency_key is not None:
        keyed = await claim_key(keys, event_log, idempotency_key, body, event)
        replayed = keyed.replayed
        if keyed.stored:
            return keyed.event, replayed
        event = keyed.event
    # The job's trace context: this submit's span (a child of the request's), or without
    # tracing the caller's traceparent, passed on as it came.
    with tracing.span(
        f"fq submit {event.type}",
        kind=SpanKind.PRODUCER,
        parent=headers,
        attributes={"fq.job_id": event.job_id, "fq.queue": event.queue, "fq.job_type": event.type},
    ) as span:
        bind_log_fields(job_id=event.job_id, queue=event.queue, trace_id=span.trace_id)
        await event_log.append(event, headers=span.headers)
    return event, replayed


def run_at_of(event: JobSpec) -> datetime | None:
    """When the job ``event`` creates will run, if it waits (a ``scheduled`` job)."""
    return event.run_at if isinstance(event, Scheduled) else None


async def claim_key(
    keys: IdempotencyKeys, event_log: EventLog, key: str, request: BaseModel, event: JobSpec
) -> Keyed:
    """Claim ``key`` for the job of ``event`` (built from ``request``), or find the job it
    already names. :class:`IdempotencyConflict` when it names a job of another request."""
    # Options left out are not part of the fingerprint, so keys claimed before an option
    # existed still match the same body; the key itself is no part of the body.
    body = request.model_dump(exclude_none=True, exclude={"idempotency_key"})
    claim = await keys.claim(key, fingerprint(body), event.job_id)
    if claim.first:
        return Keyed(event, replayed=False, stored=False)
    mine = event.model_copy(update={"job_id": claim.job_id})
    # The first request may have died before its publish: re-publishing the same event is
    # safe (same Nats-Msg-Id), but only while the log lacks it, since the duplicate window
    # is shorter than the key's life.
    history = await event_log.history(claim.job_id)
    if not history:
        return Keyed(mine, replayed=True, stored=False)
    creation = next((s.event for s in history if isinstance(s.event, JobSpec)), mine)
    return Keyed(creation, replayed=True, stored=True)
