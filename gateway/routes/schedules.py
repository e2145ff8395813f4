"""``/schedules``: periodic jobs. Define (create or replace), list with the next fire times,
pause, resume, trigger now, delete.

Definitions live in the ``FQ_CRON`` bucket and the server fires them (see
:mod:`ferrisqueue.log.cronbook`); every route needs NATS: 503 with ``Retry-After`` while it is
away. An expression or time zone that cannot run is refused with 422 and the reason, and so
is a job whose payload breaks its type's contract (the job builder's check, which
``fq cron add`` and the cron file get too), so that every tick creates a job that can run.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError

from ferrisqueue.domain.cron import CronDefinition, InvalidSchedule, UnknownSchedule
from ferrisqueue.domain.events import Token, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.jobbuilder import JobRefused, build_job
from ferrisqueue.domain.principal import Scope
from ferrisqueue.errors import NatsUnavailable
from ferrisqueue.log.cronbook import CronBook
from ferrisqueue.tracing import SpanKind
from gateway.deps import (
    ActorDep,
    Authorized,
    EventLogDep,
    JobTypesDep,
    SettingsDep,
    TracingDep,
)
from gateway.nats_link import NatsLink
from gateway.schedule_schemas import ScheduleCreate, ScheduleOut, ScheduleTriggered
from gateway.schemas import AUTH_ERRORS, BODY_ERRORS, Problem
from gateway.submit import unprocessable

router = APIRouter(prefix="/schedules", tags=["schedules"], responses=AUTH_ERRORS)

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "NATS is unreachable; retry later"}
}
_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No schedule of that name"}
}


async def get_cron_book(
    request: Request, settings: SettingsDep, job_types: JobTypesDep
) -> CronBook:
    link: NatsLink = request.app.state.nats
    if link.event_log is None or not link.connected:
        raise NatsUnavailable("the gateway is not connected to NATS")
    return CronBook.for_settings(link.event_log, settings, job_types=job_types)


CronBookDep = Annotated[CronBook, Depends(get_cron_book)]
NextCount = Annotated[int, Query(ge=0, le=100, description="How many next fire times")]


@router.post(
    "",
    dependencies=[Authorized(Scope.SCHEDULES_ADMIN)],
    responses={
        **BODY_ERRORS,
        **_UNAVAILABLE,
        422: {"description": "Not a valid schedule (the reason says why)"},
    },
)
async def put_schedule(
    body: ScheduleCreate, book: CronBookDep, actor: ActorDep, next: NextCount = 3
) -> ScheduleOut:
    """Create the schedule, or replace the one of that name (an unchanged one keeps running
    as it was, its interval not restarted). The job's payload must match its type's contract,
    as for ``POST /jobs``, so that every tick creates a job that can run."""
    try:
        stored = await book.put(body, source="api", actor=actor)
    except JobRefused as exc:
        raise unprocessable(exc, at=("body", "job")) from exc
    except InvalidSchedule as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "schedule"), "msg": str(exc), "input": None}]
        ) from exc
    return await _out(book, stored, next)


@router.get("", dependencies=[Authorized(Scope.OPS_READ)], responses=_UNAVAILABLE)
async def list_schedules(book: CronBookDep, next: NextCount = 3) -> list[ScheduleOut]:
    """Every schedule, by name, with its next fire times."""
    return [await _out(book, d, next) for d in await book.definitions()]


@router.get(
    "/{name}", dependencies=[Authorized(Scope.OPS_READ)], responses={**_UNKNOWN, **_UNAVAILABLE}
)
async def get_schedule(name: Token, book: CronBookDep, next: NextCount = 3) -> ScheduleOut:
    """One schedule and its next fire times."""
    definition = await book.get(name)
    if definition is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no schedule {name}")
    return await _out(book, definition, next)


@router.post(
    "/{name}/pause",
    dependencies=[Authorized(Scope.SCHEDULES_ADMIN)],
    responses={**_UNKNOWN, **_UNAVAILABLE},
)
async def pause_schedule(name: Token, book: CronBookDep, actor: ActorDep) -> ScheduleOut:
    """Stop firing (the definition stays; ticks already fired create no job)."""
    try:
        return await _out(book, await book.pause(name, actor=actor), 0)
    except UnknownSchedule as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.post(
    "/{name}/resume",
    dependencies=[Authorized(Scope.SCHEDULES_ADMIN)],
    responses={**_UNKNOWN, **_UNAVAILABLE},
)
async def resume_schedule(
    name: Token, book: CronBookDep, actor: ActorDep, next: NextCount = 3
) -> ScheduleOut:
    """Fire again (an interval starts afresh from now)."""
    try:
        return await _out(book, await book.resume(name, actor=actor), next)
    except UnknownSchedule as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.post(
    "/{name}/trigger",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Authorized(Scope.SCHEDULES_ADMIN)],
    responses={
        **_UNKNOWN,
        **_UNAVAILABLE,
        422: {"description": "The schedule's job no longer fits its type's contract"},
    },
)
async def trigger_schedule(
    name: Token,
    request: Request,
    book: CronBookDep,
    event_log: EventLogDep,
    tracing: TracingDep,
    actor: ActorDep,
) -> ScheduleTriggered:
    """Create the schedule's job once, now, besides its ticks (which go on as before; a
    paused schedule may be triggered too). The job's ``submitted`` event names the caller
    as its actor, not ``cron:<name>``: an operator made it, and ``fq audit`` shows who."""
    definition = await book.get(name)
    if definition is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no schedule {name}")
    try:
        event = build_job(
            definition.job, book.job_types, job_id=new_job_id(), now=utcnow(), actor=actor
        )
    except JobRefused as exc:
        raise unprocessable(exc, at=("job",)) from exc
    with tracing.span(
        f"fq submit {event.type}",
        kind=SpanKind.PRODUCER,
        parent=request.headers,
        attributes={
            "fq.job_id": event.job_id,
            "fq.queue": event.queue,
            "fq.job_type": event.type,
            "fq.schedule": name,
        },
    ) as span:
        await event_log.append(event, headers=span.headers)
    return ScheduleTriggered(
        schedule=name,
        job_id=event.job_id,
        queue=event.queue,
        type=event.type,
        by=actor,
        status_url=str(request.url_for("job_status", job_id=event.job_id)),
    )


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Authorized(Scope.SCHEDULES_ADMIN)],
    responses={**_UNKNOWN, **_UNAVAILABLE},
)
async def delete_schedule(name: Token, book: CronBookDep, actor: ActorDep) -> Response:
    """Remove the schedule; jobs it created stay."""
    try:
        await book.delete(name, actor=actor)
    except UnknownSchedule as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _out(book: CronBook, definition: CronDefinition, count: int) -> ScheduleOut:
    return ScheduleOut.of(definition, await book.next_fires(definition, count=count))
