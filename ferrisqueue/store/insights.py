"""Read queries behind the dashboard's Scheduled, Cron, Queues and Errors pages.

Each is one range of an index (see the ``__table_args__`` of :mod:`.models`) or a scan of a
bounded window, and lists are paged by keyset, so a page costs the same at 100,000 jobs as
at 100 (``python -m bench --only dashboard`` measures it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, and_, cast, func, or_
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from ferrisqueue.domain.events import cron_actor
from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.states import PendingReason
from ferrisqueue.store.models import (
    JobErrorRow,
    JobRow,
    MetricsMinuteRow,
    QueueDepthMinuteRow,
    QueueDepthRow,
)

WAITING = (PendingReason.SCHEDULED, PendingReason.RETRYING)
"""The reasons a job waits for a time: ``run_at`` (scheduled) or ``retry_at`` (retrying)."""


def waiting_jobs(
    session: Session,
    reason: PendingReason,
    *,
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> list[JobState]:
    """Jobs waiting for ``reason``'s due time, soonest first; ``after`` is the (due time, job
    id) of the previous page's last job."""
    due = col(JobRow.run_at if reason is PendingReason.SCHEDULED else JobRow.retry_at)
    query = select(JobRow).where(JobRow.pending_reason == reason.value)
    if after is not None:
        at, job_id = after
        query = query.where(or_(due > at, and_(due == at, col(JobRow.job_id) > job_id)))
    query = query.order_by(due, col(JobRow.job_id)).limit(limit)
    return [row.to_state() for row in session.exec(query)]


def waiting_counts(session: Session) -> dict[str, int]:
    """How many jobs wait for each reason of :data:`WAITING`."""
    query = (
        select(JobRow.pending_reason, func.count())
        .where(col(JobRow.pending_reason).in_([r.value for r in WAITING]))
        .group_by(col(JobRow.pending_reason))
    )
    return {str(reason): count for reason, count in session.exec(query)}


def schedule_jobs(session: Session, schedule: str, *, limit: int = 5) -> list[JobState]:
    """The newest jobs schedule ``schedule`` created (their actor is ``cron:<name>``)."""
    query = (
        select(JobRow)
        .where(JobRow.submitted_by == cron_actor(schedule))
        .order_by(col(JobRow.job_id).desc())
        .limit(limit)
    )
    return [row.to_state() for row in session.exec(query)]


def queue_minutes(session: Session, queue: str, since: datetime, until: datetime) -> list[Any]:
    """``queue``'s per-minute metrics rows (all job types) in [since, until): plain rows
    with the columns as attributes, not ORM objects, which cost twice as much at a day's
    thousands of minutes."""
    table = MetricsMinuteRow.__table__  # type: ignore[attr-defined]
    query = select_columns(table).where(
        table.c.queue == queue, table.c.minute >= since, table.c.minute < until
    )
    return list(session.execute(query.order_by(table.c.minute)))


def queue_depth(session: Session) -> dict[tuple[str, str], int]:
    """Unfinished jobs per (queue, state) now."""
    return {(r.queue, r.state): r.depth for r in session.exec(select(QueueDepthRow))}


def depth_history(
    session: Session, queue: str, since: datetime, until: datetime
) -> list[QueueDepthMinuteRow]:
    """``queue``'s depth minutes in [since, until), oldest first, each state preceded by the
    last minute before ``since`` (the depth the window starts with)."""
    rows: list[QueueDepthMinuteRow] = []
    states = session.exec(select(QueueDepthRow.state).where(QueueDepthRow.queue == queue))
    row = QueueDepthMinuteRow
    for state in list(states):
        same = select(row).where(row.queue == queue, row.state == state)
        start = session.exec(
            same.where(col(row.minute) < since).order_by(col(row.minute).desc()).limit(1)
        ).first()
        rows.extend([start] if start else [])
        window = same.where(col(row.minute) >= since, col(row.minute) < until)
        rows.extend(session.exec(window.order_by(col(row.minute))))
    return sorted(rows, key=lambda r: r.minute)


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    """Failed attempts with one error type and message in a window."""

    key: str
    error_type: str
    message: str
    attempts: int
    jobs: int
    final: int
    first_at: datetime
    last_at: datetime


def error_groups(session: Session, since: datetime, until: datetime) -> list[ErrorGroup]:
    """Each error's failed attempts in [since, until), the most frequent first."""
    e = JobErrorRow
    # SQLAlchemy's select: SQLModel's is typed for at most four columns.
    query = (
        select_columns(
            col(e.group_key),
            func.max(col(e.error_type)),
            func.max(col(e.message)),
            func.count(),
            func.count(func.distinct(col(e.job_id))),
            func.sum(cast(col(e.final), Integer)),
            func.min(col(e.at)),
            func.max(col(e.at)),
        )
        .where(col(e.at) >= since, col(e.at) < until)
        .group_by(col(e.group_key))
        .order_by(func.count().desc(), col(e.group_key))
    )
    return [
        ErrorGroup(key, etype, message, n, jobs, int(final or 0), first, last)
        for key, etype, message, n, jobs, final, first, last in session.execute(query)
    ]


def error_trends(
    session: Session, since: datetime, until: datetime, buckets: int
) -> dict[str, list[int]]:
    """Each group's failed attempts in each of ``buckets`` equal parts of [since, until),
    counted by the database (a day of failures is tens of thousands of rows)."""
    e = JobErrorRow
    width = (until - since).total_seconds() / buckets
    offset: Any  # seconds from since to the attempt
    if session.get_bind().dialect.name == "sqlite":
        start = since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        offset = (func.julianday(col(e.at)) - func.julianday(start)) * 86400.0
        bucket = cast(offset / width, Integer)  # offsets are >= 0: truncation is floor
    else:
        offset = func.extract("epoch", col(e.at) - since)
        bucket = cast(func.floor(offset / width), Integer)
    query = (
        select_columns(col(e.group_key), bucket, func.count())
        .where(col(e.at) >= since, col(e.at) < until)
        .group_by(col(e.group_key), bucket)
    )
    trends: dict[str, list[int]] = {}
    for key, index, count in session.execute(query):
        trend = trends.setdefault(key, [0] * buckets)
        trend[min(max(int(index), 0), buckets - 1)] += count
    return trends


def error_attempts(
    session: Session, key: str, *, before: int | None = None, limit: int = 50
) -> list[tuple[JobErrorRow, str | None]]:
    """Group ``key``'s failed attempts, newest first, each with its job's status now (None
    when the job's row is gone); ``before`` is the last sequence of the previous page."""
    e = JobErrorRow
    query = (
        select(e, JobRow.status)
        .join(JobRow, col(JobRow.job_id) == col(e.job_id), isouter=True)
        .where(e.group_key == key)
    )
    if before is not None:
        query = query.where(col(e.seq) < before)
    query = query.order_by(col(e.seq).desc()).limit(limit)
    return [(row, status) for row, status in session.exec(query)]
