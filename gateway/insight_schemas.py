"""Response models of the dashboard's read routes (:mod:`gateway.routes.insights`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from gateway.schemas import JobStatusOut, Latencies


class WaitingPage(BaseModel):
    """One page of jobs waiting for a time, soonest first, and how many wait in all."""

    items: list[JobStatusOut]
    next_cursor: str | None
    counts: dict[str, int] = Field(description="Jobs waiting per reason: scheduled, retrying.")


class QueueMinuteOut(Latencies):
    """One minute of a queue, all job types merged."""

    minute: datetime


class TypeTotalsOut(Latencies):
    """One job type of a queue over the whole range."""

    type: str


class DepthPoint(BaseModel):
    """A queue's depth in one state from ``minute`` on (until the state's next point)."""

    minute: datetime
    state: str
    depth: int


class QueueStatsOut(BaseModel):
    """One queue over [since, until): throughput and latency per minute, totals per job type,
    depth by state over time and now."""

    queue: str
    since: datetime
    until: datetime
    minutes: list[QueueMinuteOut]
    types: list[TypeTotalsOut]
    depth: list[DepthPoint] = Field(
        description="Depth changes, oldest first; a state's first point may lie before since."
    )
    depth_now: dict[str, int] = Field(description="Unfinished jobs per state now.")


class ErrorGroupOut(BaseModel):
    """Failed attempts with one error type and message."""

    key: str = Field(description="The group's id: /errors/{key}/attempts lists its attempts.")
    error_type: str
    message: str
    attempts: int = Field(description="Failed attempts in the range.")
    jobs: int = Field(description="Distinct jobs those attempts belong to.")
    final: int = Field(description="Attempts after which the job failed for good.")
    first_at: datetime
    last_at: datetime
    trend: list[int] = Field(description="Attempts per bucket of the range, oldest first.")


class ErrorGroupsOut(BaseModel):
    """Error groups over [since, until), the most frequent first."""

    since: datetime
    until: datetime
    bucket_seconds: float
    groups: list[ErrorGroupOut]


class ErrorAttemptOut(BaseModel):
    """One failed attempt of a group, with its job's status now (None: the job is gone)."""

    seq: int
    job_id: str
    at: datetime
    queue: str
    type: str
    final: bool
    status: str | None


class ErrorAttemptPage(BaseModel):
    items: list[ErrorAttemptOut]
    next_cursor: str | None
