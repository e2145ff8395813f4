"""Table models of the read store, and their mapping to and from the fold's :class:`JobState`.

SQLModel stores timezone-aware times (UTC) and gives them back aware, on SQLite too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Text
from sqlmodel import Field, SQLModel

from ferrisqueue.fold import JobState
from ferrisqueue.states import JobStatus, PendingReason


class JobRow(SQLModel, table=True):
    """The current state of one job: the fold of all its events applied so far."""

    __tablename__ = "jobs"

    job_id: str = Field(primary_key=True, max_length=64)
    queue: str = Field(index=True, max_length=64)
    type: str = Field(index=True, max_length=64)
    status: str = Field(index=True, max_length=16)
    pending_reason: str | None = Field(default=None, max_length=16)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attempts: int
    created_at: datetime = Field(index=True)
    updated_at: datetime
    run_at: datetime | None = None
    retry_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = Field(default=None, max_length=200)
    progress: float | None = None
    result: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    cancel_requested: bool = False
    dead_lettered: bool = False
    submitted_by: str | None = Field(default=None, max_length=200)
    events_applied: int
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))

    def update_from(self, state: JobState, seq: int) -> None:
        """Copy ``state`` into this row; ``seq`` is the stream sequence of its last event."""
        for name, value in _state_columns(state).items():
            setattr(self, name, value)
        self.last_seq = seq

    @classmethod
    def from_state(cls, state: JobState, seq: int) -> JobRow:
        return cls(**_state_columns(state), last_seq=seq)

    def to_state(self) -> JobState:
        return JobState(
            job_id=self.job_id,
            queue=self.queue,
            type=self.type,
            payload=self.payload,
            status=JobStatus(self.status),
            pending_reason=PendingReason(self.pending_reason) if self.pending_reason else None,
            created_at=self.created_at,
            updated_at=self.updated_at,
            attempts=self.attempts,
            run_at=self.run_at,
            retry_at=self.retry_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            worker=self.worker,
            progress=self.progress,
            result=self.result,
            last_error=self.last_error,
            cancel_requested=self.cancel_requested,
            dead_lettered=self.dead_lettered,
            submitted_by=self.submitted_by,
            events_applied=self.events_applied,
        )


def _state_columns(state: JobState) -> dict[str, Any]:
    return {
        "job_id": state.job_id,
        "queue": state.queue,
        "type": state.type,
        "status": state.status.value,
        "pending_reason": state.pending_reason.value if state.pending_reason else None,
        "payload": state.payload,
        "attempts": state.attempts,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "run_at": state.run_at,
        "retry_at": state.retry_at,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "worker": state.worker,
        "progress": state.progress,
        "result": state.result,
        "last_error": state.last_error,
        "cancel_requested": state.cancel_requested,
        "dead_lettered": state.dead_lettered,
        "submitted_by": state.submitted_by,
        "events_applied": state.events_applied,
    }


class JobEventRow(SQLModel, table=True):
    """One event of the log as the projector saw it: the job's timeline.

    Rejected events (illegal transitions, undecodable bodies) are kept with the reason, so the
    timeline shows everything that was ever published for the job.
    """

    __tablename__ = "job_events"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    job_id: str = Field(index=True, max_length=64)
    event: str = Field(max_length=32)
    at: datetime
    stored_at: datetime
    applied: bool
    rejected_because: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    body: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    raw: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class ProjectionCheckpoint(SQLModel, table=True):
    """The last stream sequence a projection applied; written in the same transaction as
    the rows it changed, so a crash can never apply an event twice or skip one."""

    __tablename__ = "projection_checkpoints"

    name: str = Field(primary_key=True, max_length=64)
    position: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime
