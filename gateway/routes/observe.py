"""What operators watch: workers and per-minute throughput and latency (from the read
store); dead letters have their own routes (:mod:`gateway.routes.dead_letters`). The
Prometheus metrics are ``GET /metrics`` (:mod:`gateway.metrics`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from ferrisqueue.domain import histogram
from ferrisqueue.domain.events import Token, utcnow
from ferrisqueue.domain.principal import Scope
from ferrisqueue.domain.workers import health
from ferrisqueue.store import queries
from gateway.deps import Authorized, SessionDep
from gateway.schemas import AUTH_ERRORS, MetricsOut, MinuteOut, WorkerOut

router = APIRouter(tags=["operations"], responses=AUTH_ERRORS)

_COUNTS = ("submitted", "started", "succeeded", "failed", "dead_lettered", "canceled")


@router.get("/workers", dependencies=[Authorized(Scope.OPS_READ)])
async def list_workers(session: SessionDep) -> list[WorkerOut]:
    """Every worker the read store has seen, with its health now (gone ones included)."""
    rows = await run_in_threadpool(queries.workers, session)
    now = utcnow()
    return [
        WorkerOut(
            **row.model_dump(), health=health(row.last_seen_at, row.interval, row.stopped, now)
        )
        for row in rows
    ]


@router.get("/stats/throughput", dependencies=[Authorized(Scope.OPS_READ)])
async def throughput(
    session: SessionDep,
    since: Annotated[datetime | None, Query(description="Default: an hour ago")] = None,
    until: Annotated[datetime | None, Query(description="Default: now")] = None,
    queue: Token | None = None,
    type: Token | None = None,
) -> MetricsOut:
    """Throughput and latency per minute (by queue and type) and over the whole range.

    Latencies are in milliseconds, read from histograms: within ~9 % above the exact value.
    """
    until = until or utcnow()
    since = since or until - timedelta(hours=1)
    rows = await run_in_threadpool(queries.minutes, session, since, until, queue=queue, type=type)
    minutes = [
        MinuteOut(
            minute=row.minute,
            queue=row.queue,
            type=row.type,
            **{name: getattr(row, name) for name in _COUNTS},
            **_percentiles(row.wait_hist, row.run_hist),
        )
        for row in rows
    ]
    totals = {name: sum(getattr(row, name) for row in rows) for name in _COUNTS}
    merged = _percentiles(
        histogram.merge(r.wait_hist for r in rows), histogram.merge(r.run_hist for r in rows)
    )
    return MetricsOut(since=since, until=until, minutes=minutes, totals={**totals, **merged})


def _percentiles(wait: dict[str, int], run: dict[str, int]) -> dict[str, float | None]:
    return {
        f"{name}_p{q}": histogram.percentile(hist, q)
        for name, hist in (("wait_ms", wait), ("run_ms", run))
        for q in (50, 95, 99)
    }
