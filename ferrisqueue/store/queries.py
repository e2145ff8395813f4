"""Read queries over the read store, shared by the gateway and the dashboard."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from ferrisqueue.fold import JobState
from ferrisqueue.store.models import (
    DeadLetterRow,
    JobEventRow,
    JobRow,
    MetricsMinuteRow,
    ProjectionCheckpoint,
    WorkerRow,
)
from ferrisqueue.subjects import EVENT_STREAM
from ferrisqueue.workers import WORKER_STREAM


def get_job(session: Session, job_id: str) -> JobState | None:
    row = session.get(JobRow, job_id)
    return row.to_state() if row else None


def list_jobs(
    session: Session,
    *,
    queue: str | None = None,
    status: str | None = None,
    type: str | None = None,
    before: str | None = None,
    limit: int = 50,
) -> list[JobState]:
    """Newest first. ``before`` is a job id (ids sort by creation): keyset pagination."""
    query = select(JobRow)
    if queue:
        query = query.where(JobRow.queue == queue)
    if status:
        query = query.where(JobRow.status == status)
    if type:
        query = query.where(JobRow.type == type)
    if before:
        query = query.where(col(JobRow.job_id) < before)
    query = query.order_by(col(JobRow.job_id).desc()).limit(limit)
    return [row.to_state() for row in session.exec(query)]


def status_counts(session: Session) -> dict[tuple[str, str], int]:
    """Jobs per (queue, status)."""
    query = select(JobRow.queue, JobRow.status, func.count()).group_by(
        col(JobRow.queue), col(JobRow.status)
    )
    return {(queue, status): count for queue, status, count in session.exec(query)}


def job_timeline(session: Session, job_id: str) -> list[JobEventRow]:
    query = select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(col(JobEventRow.seq))
    return list(session.exec(query))


JOBS_PROJECTION = "jobs"
WORKERS_PROJECTION = "workers"
PROJECTIONS = {JOBS_PROJECTION: EVENT_STREAM, WORKERS_PROJECTION: WORKER_STREAM}
"""The projections a complete read store has (checkpoint name -> the stream it folds)."""


def parked_events(session: Session) -> int:
    """Messages the jobs projection could not decode and parked in the timeline."""
    query = (
        select(func.count())
        .select_from(JobEventRow)
        .where(col(JobEventRow.applied).is_(False), col(JobEventRow.raw).is_not(None))
    )
    return int(session.exec(query).one())


def checkpoints(session: Session) -> list[ProjectionCheckpoint]:
    return list(session.exec(select(ProjectionCheckpoint)))


def checkpoint(session: Session, name: str) -> int:
    """The last stream sequence projection ``name`` applied (0: nothing yet)."""
    row = session.get(ProjectionCheckpoint, name)
    return row.position if row else 0


def workers(session: Session) -> list[WorkerRow]:
    """Every worker ever seen, newest heartbeat first."""
    return list(session.exec(select(WorkerRow).order_by(col(WorkerRow.last_seen_at).desc())))


def minutes(
    session: Session,
    since: datetime,
    until: datetime,
    *,
    queue: str | None = None,
    type: str | None = None,
) -> list[MetricsMinuteRow]:
    """Per-minute metrics in [since, until), oldest first."""
    query = select(MetricsMinuteRow).where(
        col(MetricsMinuteRow.minute) >= since, col(MetricsMinuteRow.minute) < until
    )
    if queue:
        query = query.where(MetricsMinuteRow.queue == queue)
    if type:
        query = query.where(MetricsMinuteRow.type == type)
    return list(session.exec(query.order_by(col(MetricsMinuteRow.minute))))


def dead_letters(
    session: Session, *, queue: str | None = None, include_redriven: bool = False, limit: int = 100
) -> list[DeadLetterRow]:
    """Dead-lettered jobs, newest first."""
    query = select(DeadLetterRow)
    if queue:
        query = query.where(DeadLetterRow.queue == queue)
    if not include_redriven:
        query = query.where(col(DeadLetterRow.redriven_at).is_(None))
    return list(
        session.exec(query.order_by(col(DeadLetterRow.dead_lettered_at).desc()).limit(limit))
    )
