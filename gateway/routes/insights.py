"""What the dashboard's Scheduled, Cron, Queues and Errors pages read (the read store):
jobs waiting for a time, a schedule's newest jobs, one queue over time, and failed attempts
grouped by error. Queries are in :mod:`ferrisqueue.store.insights`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from sqlmodel import Session

from ferrisqueue.domain import histogram
from ferrisqueue.domain.events import Token, utcnow
from ferrisqueue.domain.principal import Scope
from ferrisqueue.domain.states import PendingReason
from ferrisqueue.store import insights
from gateway.deps import Authorized, SessionDep
from gateway.insight_schemas import (
    DepthPoint,
    ErrorAttemptOut,
    ErrorAttemptPage,
    ErrorGroupOut,
    ErrorGroupsOut,
    QueueMinuteOut,
    QueueStatsOut,
    TypeTotalsOut,
    WaitingPage,
)
from gateway.schemas import AUTH_ERRORS, JobStatusOut

router = APIRouter(tags=["dashboard"], responses=AUTH_ERRORS)


def _invalid(parameter: str, message: str) -> RequestValidationError:
    """A query parameter refused after FastAPI's own checks, answered as they are (422 with
    a list of errors, the documented shape)."""
    error = {"type": "value_error", "loc": ("query", parameter), "msg": message, "input": None}
    return RequestValidationError([error])


Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
_COUNTS = ("submitted", "started", "succeeded", "failed", "dead_lettered", "canceled")
_TREND_BUCKETS = 24
_WaitingReason = Annotated[
    PendingReason, Query(description="scheduled (delayed jobs) or retrying (retries waiting)")
]


@router.get("/jobs/waiting", dependencies=[Authorized(Scope.JOBS_READ)])
async def waiting_jobs(
    session: SessionDep,
    reason: _WaitingReason = PendingReason.SCHEDULED,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> WaitingPage:
    """Jobs waiting for their due time (``run_at`` or ``retry_at``), soonest first."""
    if reason not in insights.WAITING:
        raise _invalid("reason", "scheduled or retrying")
    try:
        after = _waiting_cursor(cursor) if cursor else None
    except ValueError as exc:
        raise _invalid("cursor", str(exc)) from exc

    def read(session: Session) -> WaitingPage:
        states = insights.waiting_jobs(session, reason, after=after, limit=limit)
        items = [JobStatusOut.from_state(s, "read_store") for s in states]
        last = items[-1] if len(items) == limit else None
        due = last and (last.run_at if reason is PendingReason.SCHEDULED else last.retry_at)
        return WaitingPage(
            items=items,
            next_cursor=f"{due.isoformat()}|{last.job_id}" if last and due else None,
            counts=insights.waiting_counts(session),
        )

    return await run_in_threadpool(read, session)


def _waiting_cursor(cursor: str) -> tuple[datetime, str]:
    at, sep, job_id = cursor.partition("|")
    due = datetime.fromisoformat(at) if sep and job_id else None
    if due is None or due.tzinfo is None:
        raise ValueError("not a cursor of this list")
    return due, job_id


@router.get("/schedules/{name}/jobs", dependencies=[Authorized(Scope.JOBS_READ)])
async def schedule_jobs(
    name: Token, session: SessionDep, limit: Annotated[int, Query(ge=1, le=100)] = 5
) -> list[JobStatusOut]:
    """The newest jobs schedule ``name`` created, newest first (the first is its last
    outcome). Read from the read store, so a deleted schedule's jobs are listed too."""
    states = await run_in_threadpool(insights.schedule_jobs, session, name, limit=limit)
    return [JobStatusOut.from_state(s, "read_store") for s in states]


@router.get("/stats/queues/{queue}", dependencies=[Authorized(Scope.OPS_READ)])
async def queue_stats(
    queue: Token,
    session: SessionDep,
    since: Annotated[datetime | None, Query(description="Default: an hour ago")] = None,
    until: Annotated[datetime | None, Query(description="Default: now")] = None,
) -> QueueStatsOut:
    """One queue: per-minute throughput and p50/p95/p99 wait and run time (all job types
    merged), the same per job type over the range, and its depth by state over time."""
    until = until or utcnow()
    since = since or until - timedelta(hours=1)

    def read(session: Session) -> QueueStatsOut:
        rows = insights.queue_minutes(session, queue, since, until)
        by_minute: dict[datetime, list[Any]] = {}
        by_type: dict[str, list[Any]] = {}
        for row in rows:
            by_minute.setdefault(row.minute, []).append(row)
            by_type.setdefault(row.type, []).append(row)
        depth = insights.depth_history(session, queue, since, until)
        now = {s: n for (q, s), n in insights.queue_depth(session).items() if q == queue}
        return QueueStatsOut(
            queue=queue,
            since=since,
            until=until,
            minutes=[QueueMinuteOut(minute=m, **_merged(r)) for m, r in by_minute.items()],
            types=[TypeTotalsOut(type=t, **_merged(r)) for t, r in sorted(by_type.items())],
            depth=[DepthPoint(minute=d.minute, state=d.state, depth=d.depth) for d in depth],
            depth_now=now,
        )

    return await run_in_threadpool(read, session)


def _merged(rows: Iterable[Any]) -> dict[str, float | int | None]:
    rows = list(rows)
    hists = {
        "wait_ms": histogram.merge(r.wait_hist for r in rows),
        "run_ms": histogram.merge(r.run_hist for r in rows),
    }
    return {
        **{name: sum(getattr(r, name) for r in rows) for name in _COUNTS},
        **{
            f"{name}_p{q}": histogram.percentile(hist, q)
            for name, hist in hists.items()
            for q in (50, 95, 99)
        },
    }


@router.get("/errors", dependencies=[Authorized(Scope.OPS_READ)])
async def error_groups(
    session: SessionDep,
    since: Annotated[datetime | None, Query(description="Default: a day ago")] = None,
    until: Annotated[datetime | None, Query(description="Default: now")] = None,
) -> ErrorGroupsOut:
    """Failed attempts grouped by error type and message, the most frequent first, each with
    its attempts per 1/24 of the range (its trend)."""
    until = until or utcnow()
    since = since or until - timedelta(days=1)
    if since >= until:
        raise _invalid("since", "since must be before until")
    bucket = (until - since) / _TREND_BUCKETS

    def read(session: Session) -> ErrorGroupsOut:
        groups = insights.error_groups(session, since, until)
        trends = insights.error_trends(session, since, until, _TREND_BUCKETS)
        return ErrorGroupsOut(
            since=since,
            until=until,
            bucket_seconds=bucket.total_seconds(),
            groups=[
                ErrorGroupOut(
                    key=g.key,
                    error_type=g.error_type,
                    message=g.message,
                    attempts=g.attempts,
                    jobs=g.jobs,
                    final=g.final,
                    first_at=g.first_at,
                    last_at=g.last_at,
                    trend=trends.get(g.key, [0] * _TREND_BUCKETS),
                )
                for g in groups
            ],
        )

    return await run_in_threadpool(read, session)


@router.get("/errors/{key}/attempts", dependencies=[Authorized(Scope.OPS_READ)])
async def error_attempts(
    key: Token, session: SessionDep, cursor: Cursor = None, limit: Limit = 50
) -> ErrorAttemptPage:
    """The failed attempts of error group ``key``, newest first, with their jobs' status."""
    try:
        before = int(cursor) if cursor else None
    except ValueError as exc:
        raise _invalid("cursor", "not a sequence") from exc
    rows = await run_in_threadpool(
        insights.error_attempts, session, key, before=before, limit=limit
    )
    items = [
        ErrorAttemptOut(
            seq=row.seq,
            job_id=row.job_id,
            at=row.at,
            queue=row.queue,
            type=row.type,
            final=row.final,
            status=job_status,
        )
        for row, job_status in rows
    ]
    next_cursor = str(items[-1].seq) if len(items) == limit else None
    return ErrorAttemptPage(items=items, next_cursor=next_cursor)
