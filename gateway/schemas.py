"""Request and response models of the HTTP API (the table models live in the read store)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.jobbuilder import JobRequest
from ferrisqueue.domain.limits import QueueLimits
from ferrisqueue.domain.queuecontrol import QueueState
from ferrisqueue.domain.states import JobStatus, PendingReason
from ferrisqueue.domain.workers import WorkerHealth


class JobCreate(JobRequest):
    """A job to run."""

    # The fields and their rules are the job builder's (ferrisqueue.domain.jobbuilder.JobRequest),
    # so that every way of creating a job reads a request the same way.

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"type": "echo", "payload": {"hello": "world"}, "queue": "default"},
                {"type": "echo", "payload": {"hello": "later"}, "delay": 30},
                {"type": "echo", "run_at": "2030-01-01T09:00:00Z", "max_attempts": 5},
            ]
        },
    )


class JobAccepted(BaseModel):
    """The job is in the event log: it will run (at least once)."""

    job_id: str
    queue: str
    status: JobStatus
    run_at: datetime | None = Field(
        default=None, description="When it will run, if it waits (pending: scheduled)."
    )
    status_url: str


class JobStatusOut(BaseModel):
    """What is known about a job now."""

    job_id: str
    queue: str
    type: str
    status: JobStatus
    pending_reason: PendingReason | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    run_at: datetime | None
    retry_at: datetime | None
    worker: str | None
    progress: float | None
    result: Any
    last_error: str | None
    cancel_requested: bool
    dead_lettered: bool = Field(description="Failed by being dead-lettered (see /dead-letters).")
    source: Literal["read_store", "event_log"] = Field(
        description="read_store: from the projection; event_log: folded from the log because "
        "the projection has not caught up with this job yet."
    )

    @classmethod
    def from_state(
        cls, state: JobState, source: Literal["read_store", "event_log"]
    ) -> JobStatusOut:
        return cls(
            job_id=state.job_id,
            queue=state.queue,
            type=state.type,
            status=state.status,
            pending_reason=state.pending_reason,
            attempts=state.attempts,
            created_at=state.created_at,
            updated_at=state.updated_at,
            started_at=state.started_at,
            finished_at=state.finished_at,
            run_at=state.run_at,
            retry_at=state.retry_at,
            worker=state.worker,
            progress=state.progress,
            result=state.result,
            last_error=state.last_error,
            cancel_requested=state.cancel_requested,
            dead_lettered=state.dead_lettered,
            source=source,
        )


class JobPage(BaseModel):
    """One page of jobs, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[JobStatusOut]
    next_cursor: str | None


class QueueControlOut(BaseModel):
    """A queue's control state (from the log's ``FQ_CONTROLS`` stream)."""

    queue: str
    state: Literal["active", "paused"]
    changed_by: str | None = Field(None, description="Who last paused or resumed it")
    changed_at: datetime | None = Field(None, description="Since when it is in this state")
    limits: QueueLimits = Field(description="Its concurrency and rate limits (null: none)")
    limits_by: str | None = Field(None, description="Who last set its limits")
    limits_at: datetime | None = Field(None, description="When its limits were last set")

    @classmethod
    def of(cls, state: QueueState) -> QueueControlOut:
        return cls(
            queue=state.queue,
            state="paused" if state.paused else "active",
            changed_by=state.changed_by,
            changed_at=state.changed_at,
            limits=state.limits,
            limits_by=state.limits_by,
            limits_at=state.limits_at,
        )


class QueueControlIn(BaseModel):
    """Why the queue is paused or resumed (optional; recorded in the event)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500)


class QueueLimitsIn(QueueLimits):
    """Every limit of a queue (one left out or null is lifted), and why (kept in the
    event)."""

    reason: str | None = Field(None, max_length=500)


class QueueStats(QueueControlOut):
    """Jobs per status in one queue (from the read store), and its control state."""

    counts: dict[JobStatus, int]


class Problem(BaseModel):
    """An error answer."""

    detail: str


BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The body cannot be parsed (e.g. not UTF-8)"},
    408: {"model": Problem, "description": "The body took longer than FQ_GATEWAY_BODY_TIMEOUT"},
    413: {"model": Problem, "description": "The body is larger than FQ_GATEWAY_MAX_BODY_BYTES"},
}
"""The answers of every operation that reads a body, whatever the body (gateway/limits.py)."""

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No API key, or an invalid or revoked one"},
    403: {"model": Problem, "description": "The key lacks the operation's scope"},
    503: {"model": Problem, "description": "NATS or the key store is unreachable; retry later"},
}
"""The answers of every operation that needs an API key (``Authorized``), whatever else it
does; an operation's own description of a status wins."""

RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"model": Problem, "description": "The key's submission rate limit; see Retry-After"},
}
"""The answer of an operation that counts against a key's rate limit."""


class AuditEntryOut(BaseModel):
    """One stored message of a job, as the fold saw it."""

    model_config = ConfigDict(from_attributes=True)

    seq: int = Field(description="Stream sequence in FQ_EVENTS.")
    event: str
    at: datetime = Field(description="When it happened (producer's clock).")
    stored_at: datetime = Field(description="When JetStream stored it.")
    actor: str | None = Field(
        description="Who made it happen: key:<name> (the API's authenticated caller), "
        "worker:<id>, scheduler, cron:<schedule>, cli:<user>@<host>, nats:anonymous, "
        "claimed:<value> (unverified) or system; null only for an undecodable message."
    )
    applied: bool = Field(description="False: recorded but not a legal transition (see note).")
    status_after: str | None
    note: str | None
    body: dict[str, Any] | None
    raw: str | None = Field(description="The raw body of an undecodable message.")


class ProjectionStatus(BaseModel):
    """How far a projection is behind the event log."""

    name: str
    stream: str
    position: int = Field(description="Last stream sequence applied to the read store.")
    last_applied_at: datetime | None
    stream_last_seq: int | None = Field(description="Newest sequence in the log (null: NATS away).")
    lag_events: int | None
    parked_events: int = Field(
        description="Undecodable messages parked in job timelines instead of stopping the fold."
    )
    lost_deliveries: int = Field(
        default=0,
        description="Messages the consumer failed to deliver (e.g. in a NATS leader change); "
        "each gap was filled by re-reading the log, none was skipped.",
    )
    checkpoint_moves: int = Field(
        default=0,
        description="Batches refused because another projector had moved the checkpoint.",
    )
    orphan_events: int = Field(
        default=0,
        description="Events for jobs the store never saw created (a stray producer, a job a "
        "cleanup deleted, or a store that missed events: run `fq projections verify`).",
    )
    last_problem: str | None = Field(default=None, description="The latest of the above.")
    last_problem_at: datetime | None = None


class WorkerOut(BaseModel):
    """A worker process, from its latest heartbeat."""

    worker_id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    in_flight: int
    processed: int
    failed: int
    started_at: datetime
    last_seen_at: datetime
    interval: float
    stopped: bool
    health: WorkerHealth


class Latencies(BaseModel):
    """Counts and latency percentiles (ms, from histograms: within ~9 % above exact)."""

    submitted: int
    started: int
    succeeded: int
    failed: int
    dead_lettered: int
    canceled: int
    wait_ms_p50: float | None
    wait_ms_p95: float | None
    wait_ms_p99: float | None
    run_ms_p50: float | None
    run_ms_p95: float | None
    run_ms_p99: float | None


class MinuteOut(Latencies):
    """One minute of one queue and job type."""

    minute: datetime
    queue: str
    type: str


class MetricsOut(BaseModel):
    """Per-minute metrics and their totals over [since, until)."""

    since: datetime
    until: datetime
    minutes: list[MinuteOut]
    totals: dict[str, float | None]
