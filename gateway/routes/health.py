"""Liveness and readiness."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from ferrisqueue.domain.partition import Partition, parse_checkpoint
from ferrisqueue.domain.principal import Scope
from ferrisqueue.errors import NatsUnavailable
from ferrisqueue.store import queries
from ferrisqueue.store.models import ProjectionCheckpoint
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
    divergence signals its projector noticed. A partitioned jobs projection is listed by
    partition (``jobs/0of2``, ``jobs/1of2``...); undecodable events it parked are counted on
    its first."""
    rows = {row.name: row for row in await run_in_threadpool(queries.checkpoints, session)}
    parked = await run_in_threadpool(queries.parked_events, session)
    signals = await run_in_threadpool(queries.projection_health, session)
    link: NatsLink = request.app.state.nats
    found = []
    for name, stream in _listed(rows):
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
                parked_events=parked if name == _first_jobs(rows) else 0,
                **(signals[name].model_dump(exclude={"name"}) if name in signals else {}),
            )
        )
    return found


def _partitions(rows: dict[str, ProjectionCheckpoint]) -> list[Partition]:
    """The jobs projection's partitions, by its checkpoints (one if there are none)."""
    found = [
        partition
        for name in rows
        if (partition := parse_checkpoint(queries.JOBS_PROJECTION, name)) is not None
    ]
    count = max((partition.count for partition in found), default=1)
    return Partition(0, count).siblings()


def _first_jobs(rows: dict[str, ProjectionCheckpoint]) -> str:
    return _partitions(rows)[0].checkpoint(queries.JOBS_PROJECTION)


def _listed(rows: dict[str, ProjectionCheckpoint]) -> list[tuple[str, str]]:
    """(checkpoint name, stream) of every projection to list, partitions expanded."""
    listed = []
    for name, stream in sorted(queries.PROJECTIONS.items()):
        if name == queries.JOBS_PROJECTION:
            listed += [(partition.checkpoint(name), stream) for partition in _partitions(rows)]
        else:
            listed.append((name, stream))
    return listed
