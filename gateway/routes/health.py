"""Liveness and readiness."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from ferrisqueue.domain.principal import Scope
from ferrisqueue.errors import NatsUnavailable
from ferrisqueue.store import queries
from gateway.deps import Authorized, SessionDep
from gateway.nats_link import NatsLink
from gateway.schemas import AUTH_ERRORS, ProjectionStatus

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "NATS or the read store is unreachable"}})
async def readyz(request: Request, response: Response, session: SessionDep) -> dict[str, bool]:
    """Ready to accept jobs: NATS connected and the read store answering."""
    link: NatsLink = request.app.state.nats
    try:
        await run_in_threadpool(lambda: session.execute(text("SELECT 1")))
        store_ok = True
    except Exception:  # any database error means "not ready", which is the answer we give
        store_ok = False
    checks = {"nats": link.connected, "read_store": store_ok}
    if not all(checks.values()):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return checks


@router.get("/projections", dependencies=[Authorized(Scope.OPS_READ)], responses=AUTH_ERRORS)
async def projections(request: Request, session: SessionDep) -> list[ProjectionStatus]:
    """Each projection's position, lag behind its stream (null while NATS is away) and the
    divergence signals its projector noticed."""
    rows = {row.name: row for row in await run_in_threadpool(queries.checkpoints, session)}
    parked = await run_in_threadpool(queries.parked_events, session)
    signals = await run_in_threadpool(queries.projection_health, session)
    link: NatsLink = request.app.state.nats
    found = []
    for name, stream in sorted(queries.PROJECTIONS.items()):
        row = rows.get(name)
        position = row.position if row else 0
        last: int | None = None
        if link.event_log is not None:
            with contextlib.suppress(NatsUnavailable):
                last = await link.event_log.last_seq(stream)
        found.append(
            ProjectionStatus(
                name=name,
                stream=stream,
                position=position,
                last_applied_at=row.updated_at if row else None,
                stream_last_seq=last,
                lag_events=None if last is None else max(0, last - position),
                parked_events=parked if name == queries.JOBS_PROJECTION else 0,
                **(signals[name].model_dump(exclude={"name"}) if name in signals else {}),
            )
        )
    return found
