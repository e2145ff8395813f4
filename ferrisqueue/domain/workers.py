"""Worker heartbeats: what each worker process says about itself, and how healthy that is.

Every worker publishes a :class:`Heartbeat` on ``fq.worker.<worker_id>.heartbeat`` every
``FQ_WORKER_HEARTBEAT`` seconds, and a last one on ``...stopped`` when it stops cleanly. They
go to their own stream (``FQ_WORKERS``, short retention): they are not job events and would
only crowd the audit log. The projector folds them into the ``workers`` table.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ferrisqueue.domain.events import Token, UtcDatetime

WORKER_STREAM = "FQ_WORKERS"
WORKER_SUBJECTS = "fq.worker.>"


class Heartbeat(BaseModel):
    """One worker's state at ``at``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["heartbeat", "stopped"] = "heartbeat"
    worker_id: Token
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int = Field(ge=1)
    in_flight: int = Field(ge=0)
    processed: int = Field(ge=0, description="Jobs finished since the worker started.")
    failed: int = Field(ge=0, description="Of those, how many failed.")
    started_at: UtcDatetime
    at: UtcDatetime
    interval: float = Field(gt=0, description="Seconds between heartbeats.")

    @property
    def subject(self) -> str:
        return f"fq.worker.{self.worker_id}.{self.kind}"


class WorkerHealth(StrEnum):
    """How a worker looks from its heartbeats."""

    HEALTHY = "healthy"
    """A heartbeat within three intervals."""
    STALE = "stale"
    """Missed three heartbeats: busy event loop, network trouble, or about to be gone."""
    GONE = "gone"
    """Stopped cleanly, or silent for a minute and twelve intervals."""


def health(last_seen: datetime, interval: float, stopped: bool, now: datetime) -> WorkerHealth:
    """Classify a worker by its last heartbeat (pure: the caller passes the clock)."""
    silent = now - last_seen
    if stopped or silent > max(timedelta(minutes=1), timedelta(seconds=12 * interval)):
        return WorkerHealth.GONE
    if silent > timedelta(seconds=3 * interval):
        return WorkerHealth.STALE
    return WorkerHealth.HEALTHY
