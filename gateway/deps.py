"""FastAPI dependencies: settings, read-store sessions, the event log, the caller's actor.

Those that only read the app's state are ``async def``: FastAPI runs a plain ``def``
dependency in its thread pool, and three such hops per ``POST /jobs`` cost more CPU than the
rest of the request. ``get_session`` stays a plain generator: closing a session may talk to
the database, which must not block the event loop."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.domain.principal import ALL_SCOPES, Principal, Scope
from ferrisqueue.errors import NatsUnavailable
from ferrisqueue.jobtypes import JobType
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.logs import bind_log_fields
from ferrisqueue.settings import AuthMode, Settings
from ferrisqueue.tracing import Tracing
from gateway.auth import KeyCache
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


# --- Authentication -------------------------------------------------------------------------

BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="APIKey",
    description="An API key (`fq keys create`, or the admin key `fq up` writes to "
    "var/admin.key), sent as `Authorization: Bearer <key>`.",
)

ANONYMOUS = Principal(name="anonymous", scopes=ALL_SCOPES, key_id=None)
"""Who calls a gateway running with ``FQ_AUTH=off`` (never attached to the request)."""


def _unauthorized(detail: str, error: str | None = None) -> HTTPException:
    challenge = 'Bearer realm="ferrisqueue"' + (f', error="{error}"' if error else "")
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": challenge}
    )


@functools.cache  # one dependency per scope: FastAPI then runs it once per request
def Authorized(scope: Scope) -> Any:
    """A route's requirement: an API key holding ``scope``. Use as a dependency
    (``dependencies=[Authorized(Scope.JOBS_READ)]``) or a parameter
    (``principal: Annotated[Principal, Authorized(Scope.JOBS_WRITE)]``).

    Answers 401 with ``WWW-Authenticate: Bearer`` when no key or an unknown, malformed or
    revoked one is sent, 403 when the key lacks ``scope``. Sets ``request.state.principal``
    (the events' actor reads it). With ``FQ_AUTH=off`` every caller is :data:`ANONYMOUS` and
    nothing is attached to the request.

    Declare it in the route decorator's ``dependencies`` (as every route does, the submit
    routes too): those run before the endpoint's parameters, so a parameter reading
    ``request.state.principal`` (the actor) finds it set. A parameter
    ``Annotated[Principal, Authorized(scope)]`` besides gets the same, cached, result."""

    async def authorized(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    ) -> Principal:
        principal = await principal_of(request, credentials, scope)
        if principal is not ANONYMOUS:
            request.state.principal = principal
        return principal

    return Security(authorized, scopes=[scope.value])


async def principal_of(
    request: Request, credentials: HTTPAuthorizationCredentials | None, scope: Scope
) -> Principal:
    """Who sent ``request`` with ``credentials`` (its bearer key, see :func:`Authorized`),
    if the key holds ``scope``: ``401``/``403`` as :class:`HTTPException` otherwise,
    :class:`NatsUnavailable` before the key store was read. :data:`ANONYMOUS` with
    ``FQ_AUTH=off``."""
    settings: Settings = request.app.state.settings
    if settings.auth is AuthMode.OFF:
        return ANONYMOUS
    if credentials is None:
        raise _unauthorized("an API key is required: Authorization: Bearer <key>")
    record = await _key_cache(request).authenticate(credentials.credentials)
    if record is None:
        raise _unauthorized("the API key is invalid or revoked", "invalid_token")
    principal = record.principal()
    if not principal.may(scope):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"key {principal.name} lacks the scope {scope.value}",
            headers={
                "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope.value}"'
            },
        )
    return principal


def _key_cache(request: Request) -> KeyCache:
    link: NatsLink = request.app.state.nats
    if link.keys is None:
        raise NatsUnavailable("the gateway has not read the key store yet")
    return link.keys


async def charge_submissions(request: Request, principal: Principal, jobs: int) -> None:
    """Count ``jobs`` against the principal's rate limit (a batch counts each of its jobs);
    raises :class:`~gateway.auth.RateLimited` past it. Nothing with ``FQ_AUTH=off``."""
    if principal.key_id is None:
        return
    await _key_cache(request).charge(principal, jobs)


# --- The actor of a request ------------------------------------------------------------------

ANONYMOUS_ACTOR = "anonymous"
"""The actor of a request that carries no authenticated principal (authentication off)."""


async def current_actor(request: Request) -> str:
    """Who the request acts for, as the event log records it: the authenticated principal's
    ``actor`` (``key:<name>``) that authentication attached to ``request.state.principal``,
    else ``anonymous``. Never anything the request's body or headers claim."""
    principal = getattr(request.state, "principal", None)
    actor = getattr(principal, "actor", None) if principal is not None else None
    return actor if isinstance(actor, str) and actor else ANONYMOUS_ACTOR


ActorDep = Annotated[str, Depends(current_actor)]
