"""Read queries over the read store, shared by the gateway and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, func, or_
from sqlmodel import Session, col, select

from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.partition import Partition, parse_checkpoint
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.domain.workers import WORKER_STREAM
from ferrisqueue.store.models import (
    DeadLetterRow,
    JobEventRow,
    JobRow,
    MetricsMinuteRow,
    ProjectionCheckpoint,
    ProjectionHealth,
    WorkerRow,
)


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


def projection_health(session: Session) -> dict[str, ProjectionHealth]:
    """Each projection's divergence signals, by projection name (none noticed: absent)."""
    return {row.name: row for row in session.exec(select(ProjectionHealth))}


def checkpoint(session: Session, name: str) -> int:
    """The last stream sequence projection ``name`` applied (0: nothing yet)."""
    row = session.get(ProjectionCheckpoint, name)
    return row.position if row else 0


def partition_checkpoints(session: Session, base: str) -> dict[Partition, ProjectionCheckpoint]:
    """The checkpoints of projection ``base`` by partition (``jobs``, or ``jobs/0of2``...;
    see :mod:`ferrisqueue.domain.partition`)."""
    rows = session.exec(
        select(ProjectionCheckpoint).where(
            or_(
                col(ProjectionCheckpoint.name) == base,
                col(ProjectionCheckpoint.name).startswith(f"{base}/"),
            )
        )
    )
    found = {}
    for row in rows:
        partition = parse_checkpoint(base, row.name)
        if partition is not None:
            found[partition] = row
    return found


def jobs_checkpoint(session: Session) -> int:
    """The stream sequence up to which the jobs projection has applied *every* event: its
    checkpoint, or the lowest of its partitions' (0: nothing yet, or a partition that has
    not committed). Past it, some jobs may already show later events than others."""
    found = partition_checkpoints(session, JOBS_PROJECTION)
    if not found:
        return 0
    counts = {partition.count for partition in found}
    expected = max(counts)
    if len(found) < expected:
        return 0  # a partition that never committed has applied nothing
    return min(row.position for row in found.values())


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


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters to select; ``None`` fields select everything.

    ``reason`` is a case-insensitive substring of the dead-letter reason or of the job's last
    error; ``since`` (inclusive) and ``until`` (exclusive) bound the dead-lettering time.
    """

    queue: str | None = None
    type: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def dead_letters(
    session: Session,
    selection: DeadLetterFilter = DeadLetterFilter(),
    *,
    include_resolved: bool = False,
    after: str | None = None,
    limit: int = 100,
) -> list[DeadLetterRow]:
    """Dead letters, newest first; redriven and purged ones only with ``include_resolved``.

    ``after`` is the :func:`dead_letter_cursor` of the last row of the previous page
    (keyset pagination on the dead-lettering time, then the job id); ``ValueError`` if it
    is not one.
    """
    row = DeadLetterRow
    query = select(row)
    if selection.queue:
        query = query.where(row.queue == selection.queue)
    if selection.type:
        query = query.where(row.type == selection.type)
    if selection.reason:
        pattern = f"%{_escape_like(selection.reason)}%"
        query = query.where(
            or_(
                col(row.reason).ilike(pattern, escape="\\"),
                col(row.last_error).ilike(pattern, escape="\\"),
            )
        )
    if selection.since:
        query = query.where(col(row.dead_lettered_at) >= selection.since)
    if selection.until:
        query = query.where(col(row.dead_lettered_at) < selection.until)
    if not include_resolved:
        query = query.where(col(row.resolution).is_(None))
    if after:
        at, job_id = parse_dead_letter_cursor(after)
        query = query.where(
            or_(
                col(row.dead_lettered_at) < at,
                and_(col(row.dead_lettered_at) == at, col(row.job_id) < job_id),
            )
        )
    query = query.order_by(col(row.dead_lettered_at).desc(), col(row.job_id).desc())
    return list(session.exec(query.limit(limit)))


def dead_letter_cursor(row: DeadLetterRow) -> str:
    """The cursor of the page that follows ``row``."""
    return f"{row.dead_lettered_at.astimezone(UTC).isoformat()}|{row.job_id}"


def parse_dead_letter_cursor(cursor: str) -> tuple[datetime, str]:
    """The (time, job id) a :func:`dead_letter_cursor` names; ``ValueError`` if malformed."""
    at, sep, job_id = cursor.partition("|")
    if not sep or not job_id:
        raise ValueError(f"{cursor!r} is not a dead-letter cursor")
    parsed = datetime.fromisoformat(at)
    if parsed.tzinfo is None:
        raise ValueError(f"{cursor!r} is not a dead-letter cursor (no timezone)")
    return parsed, job_id


def _escape_like(text: str) -> str:
    # The operator's text is matched literally: % and _ are not wildcards here.
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
