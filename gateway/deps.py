"""FastAPI dependencies: settings, read-store sessions, the event log.

Those that only read the app's state are ``async def``: FastAPI runs a plain ``def``
dependency in its thread pool, and three such hops per ``POST /jobs`` cost more CPU than the
rest of the request. ``get_session`` stays a plain generator: closing a session may talk to
the database, which must not block the event loop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.errors import NatsUnavailable
from ferrisqueue.jobtypes import JobType
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.logs import bind_log_fields
from ferrisqueue.settings import Settings
from ferrisqueue.tracing import Tracing
from gateway.idempotency import IdempotencyKeys
from gateway.nats_link import NatsLink


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    engine: Engine = request.app.state.engine
    with Session(engine) as session:
        yield session


async def get_job_types(request: Request) -> dict[str, JobType]:
    job_types: dict[str, JobType] = request.app.state.job_types
    return job_types


def event_log_of(request: Request) -> EventLog:
    """The event log, or :class:`NatsUnavailable` before the gateway first reached NATS."""
    link: NatsLink = request.app.state.nats
    if link.event_log is None:
        raise NatsUnavailable("the gateway has not reached NATS yet")
    return link.event_log


async def get_event_log(request: Request) -> EventLog:
    return event_log_of(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


async def get_idempotency_keys(request: Request) -> IdempotencyKeys:
    link: NatsLink = request.app.state.nats
    if link.idempotency is None:
        raise NatsUnavailable("the gateway has not reached NATS yet")
    return link.idempotency


EventLogDep = Annotated[EventLog, Depends(get_event_log)]
IdempotencyDep = Annotated[IdempotencyKeys, Depends(get_idempotency_keys)]
JobTypesDep = Annotated[dict[str, JobType], Depends(get_job_types)]


async def get_tracing(request: Request) -> Tracing:
    tracing: Tracing = request.app.state.tracing
    return tracing


TracingDep = Annotated[Tracing, Depends(get_tracing)]


async def bind_job_log_fields(request: Request) -> None:
    """The ``job_id`` a request's path names, on the log records made while answering it
    (the request runs in a task of its own, so nothing needs undoing)."""
    if (job_id := request.path_params.get("job_id")) is not None:
        bind_log_fields(job_id=job_id)
