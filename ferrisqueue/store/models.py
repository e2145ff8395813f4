"""Table models of the read store, and the mapping between a ``jobs`` row and the fold's
:class:`JobState`.

Times are stored in UTC and come back timezone-aware, on SQLite too (:mod:`.types`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Text
from sqlmodel import Field, SQLModel

from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.states import JobStatus, PendingReason
from ferrisqueue.store.types import UtcDateTime


class JobRow(SQLModel, table=True):
    """The current state of one job: the fold of all its events applied so far."""

    __tablename__ = "jobs"
    __table_args__ = (
        # Counts per (queue, status) read only this index; a status's newest jobs (the Errors
        # page's failed ones) are a range of the next, already in job id order.
        Index("ix_jobs_queue_status", "queue", "status"),
        Index("ix_jobs_status_job_id", "status", "job_id"),
        # The dashboard's Scheduled page (waiting jobs by due time) and Cron page (a
        # schedule's newest jobs): each a range of one index, however many jobs the store has.
        Index("ix_jobs_waiting_run_at", "pending_reason", "run_at", "job_id"),
        Index("ix_jobs_waiting_retry_at", "pending_reason", "retry_at", "job_id"),
        Index("ix_jobs_submitted_by", "submitted_by", "job_id"),
    )

    job_id: str = Field(primary_key=True, max_length=64)
    queue: str = Field(max_length=64)
    type: str = Field(index=True, max_length=64)
    status: str = Field(max_length=16)
    pending_reason: str | None = Field(default=None, max_length=16)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attempts: int
    created_at: datetime = Field(index=True, sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    run_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    retry_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    finished_at: datetime | None = Field(default=None, index=True, sa_type=UtcDateTime)
    worker: str | None = Field(default=None, max_length=200)
    progress: float | None = None
    result: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    cancel_requested: bool = False
    dead_lettered: bool = False
    submitted_by: str | None = Field(default=None, max_length=200)
    events_applied: int
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))

    def to_state(self) -> JobState:
        return state_from_row(self.model_dump())


_STATE_FIELDS = tuple(JobState.__dataclass_fields__)


JOB_COLUMNS = (*_STATE_FIELDS, "last_seq")
"""The ``jobs`` columns, in the order of :func:`job_row`'s tuples."""
_STATUS, _REASON = _STATE_FIELDS.index("status"), _STATE_FIELDS.index("pending_reason")


def job_row(state: JobState, seq: int) -> tuple[Any, ...]:
    """The ``jobs`` row of ``state``, in :data:`JOB_COLUMNS` order; ``seq`` is the stream
    sequence of its last event."""
    row = [getattr(state, name) for name in _STATE_FIELDS]
    row[_STATUS] = state.status.value
    row[_REASON] = state.pending_reason.value if state.pending_reason else None
    row.append(seq)
    return tuple(row)


def state_from_row(row: Mapping[str, Any]) -> JobState:
    """The :class:`JobState` a ``jobs`` row holds."""
    fields = {name: row[name] for name in _STATE_FIELDS}
    fields["status"] = JobStatus(row["status"])
    reason = row["pending_reason"]
    fields["pending_reason"] = PendingReason(reason) if reason else None
    return JobState(**fields)


class JobEventRow(SQLModel, table=True):
    """One event of the log as the projector saw it: the job's timeline.

    Rejected events (illegal transitions, undecodable bodies) are kept with the reason, so the
    timeline shows everything that was ever published for the job.
    """

    __tablename__ = "job_events"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    job_id: str = Field(index=True, max_length=64)
    event: str = Field(max_length=32)
    at: datetime = Field(sa_type=UtcDateTime)
    stored_at: datetime = Field(sa_type=UtcDateTime)
    actor: str | None = Field(default=None, max_length=200)
    """Who made the event happen (the event's ``actor``); ``None`` only for an undecodable
    message or a schema-1 event that named nobody."""
    applied: bool
    rejected_because: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    body: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    """The event's JSON as it was published (its bytes, as received), for a decodable one."""
    raw: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    """The message's bytes (UTF-8, replaced where invalid), for an undecodable one."""


class ProjectionCheckpoint(SQLModel, table=True):
    """The last stream sequence a projection applied; written in the same transaction as
    the rows it changed, so a crash can never apply an event twice or skip one."""

    __tablename__ = "projection_checkpoints"

    name: str = Field(primary_key=True, max_length=64)
    position: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(sa_type=UtcDateTime)


class ProjectionHealth(SQLModel, table=True):
    """What a projection noticed that could make the store differ from its log.

    Counted for ever (a rebuild starts at zero); an operator reads them in
    ``GET /projections`` and checks the store with ``fq projections verify``.
    """

    __tablename__ = "projection_health"

    name: str = Field(primary_key=True, max_length=64)
    lost_deliveries: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    """Gaps in what the consumer delivered, although the stream holds the messages: each was
    filled by re-reading the log from the checkpoint (none was skipped)."""
    checkpoint_moves: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    """Batches refused because another projector had moved the checkpoint meanwhile."""
    orphan_events: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    """Events for a job the store never saw created: a producer's stray event, a job whose
    row a cleanup deleted, or a store that missed the job's creation."""
    last_problem: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    last_problem_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class WorkerRow(SQLModel, table=True):
    """A worker process as its latest heartbeat describes it."""

    __tablename__ = "workers"

    worker_id: str = Field(primary_key=True, max_length=64)
    hostname: str = Field(max_length=255)
    pid: int
    queues: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    concurrency: int
    in_flight: int
    processed: int
    failed: int
    started_at: datetime = Field(sa_type=UtcDateTime)
    last_seen_at: datetime = Field(sa_type=UtcDateTime)
    interval: float
    stopped: bool = False


class MetricsMinuteRow(SQLModel, table=True):
    """What happened in one minute, per queue and job type (by the events' own times).

    ``wait_hist`` (became runnable -> started) and ``run_hist`` (started -> outcome) are
    :mod:`ferrisqueue.domain.histogram` histograms, so minutes can be merged into any range.
    """

    __tablename__ = "metrics_minute"

    minute: datetime = Field(primary_key=True, sa_type=UtcDateTime)
    queue: str = Field(primary_key=True, max_length=64)
    type: str = Field(primary_key=True, max_length=64)
    submitted: int = 0
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    dead_lettered: int = 0
    canceled: int = 0
    wait_hist: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    run_hist: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class QueueDepthRow(SQLModel, table=True):
    """How many unfinished jobs a queue holds in each state now (``pending:queued``,
    ``pending:scheduled``, ``pending:retrying``, ``running``): kept by the jobs projection
    from each event's state before and after, so no batch has to count the ``jobs`` table."""

    __tablename__ = "queue_depth"

    queue: str = Field(primary_key=True, max_length=64)
    state: str = Field(primary_key=True, max_length=32)
    depth: int = Field(sa_column=Column(BigInteger, nullable=False))


class QueueDepthMinuteRow(SQLModel, table=True):
    """A queue's depth in one state at the end of a minute (by the events' own times) in
    which it changed; a minute without a row kept the depth of the row before it."""

    __tablename__ = "queue_depth_minute"

    queue: str = Field(primary_key=True, max_length=64)
    state: str = Field(primary_key=True, max_length=32)
    minute: datetime = Field(primary_key=True, sa_type=UtcDateTime)
    depth: int = Field(sa_column=Column(BigInteger, nullable=False))


class JobErrorRow(SQLModel, table=True):
    """One failed attempt (a ``failed`` event), grouped by ``group_key``: a hash of its
    error type and message, so the Errors page counts and trends each distinct error."""

    __tablename__ = "job_errors"
    __table_args__ = (Index("ix_job_errors_group", "group_key", "seq"),)

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    job_id: str = Field(max_length=64)
    at: datetime = Field(index=True, sa_type=UtcDateTime)
    queue: str = Field(max_length=64)
    type: str = Field(max_length=64)
    group_key: str = Field(max_length=16)
    error_type: str = Field(max_length=200)
    message: str = Field(sa_column=Column(Text, nullable=False))
    final: bool
    """No retry followed: the job failed for good with this error."""


class DeadLetterRow(SQLModel, table=True):
    """A job that was dead-lettered, and what an operator did about it since.

    ``resolution`` is ``None`` while the job is dead (listed by default), then ``redriven``
    or ``purged`` with who did it and when; a job dead-lettered again starts a fresh row.
    """

    __tablename__ = "dead_letters"

    job_id: str = Field(primary_key=True, max_length=64)
    queue: str = Field(index=True, max_length=64)
    type: str = Field(index=True, max_length=64)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    attempts: int
    dead_lettered_at: datetime = Field(index=True, sa_type=UtcDateTime)
    resolution: str | None = Field(default=None, index=True, max_length=16)
    resolved_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    resolved_by: str | None = Field(default=None, max_length=200)


class SchemaInfo(SQLModel, table=True):
    """The read store's schema version (see :mod:`ferrisqueue.store.db`)."""

    __tablename__ = "schema_info"

    key: str = Field(primary_key=True, max_length=32)
    value: int
