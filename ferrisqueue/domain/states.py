"""The states a job can be in, as a user sees them."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """The status of a job: the fold of its events (see :mod:`ferrisqueue.domain.fold`)."""

    PENDING = "pending"
    """Accepted and waiting: for a worker (``queued``), for its ``run_at`` (``scheduled``),
    for its next attempt (``retrying``) or for its parents (``dependencies``). Entered by
    ``submitted``, ``scheduled``, ``awaiting``,
    ``released``, ``redriven`` or a ``failed`` with a ``retry_at``; left by ``started``,
    ``canceled`` or ``dead_lettered``."""

    RUNNING = "running"
    """A worker holds the job (``started``). A worker that dies leaves it running until its
    lease (AckWait) runs out and another worker records the next ``started``. Left by
    ``succeeded``, ``failed``, ``canceled`` or ``dead_lettered``."""

    COMPLETED = "completed"
    """The handler returned (``succeeded``). Terminal."""

    FAILED = "failed"
    """The last attempt failed with no retry left, or the job was dead-lettered. Terminal
    unless an operator redrives it (``redriven`` makes it ``pending`` again)."""

    CANCELED = "canceled"
    """Canceled before it could finish (``canceled``). Terminal."""

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)


class PendingReason(StrEnum):
    """Why a ``pending`` job waits: shown beside the status as its sub-state."""

    QUEUED = "queued"
    """Runnable now; waits for a free worker."""

    SCHEDULED = "scheduled"
    """Waits for its ``run_at``."""

    RETRYING = "retrying"
    """An attempt failed; waits for ``retry_at`` before the next one."""

    DEPENDENCIES = "dependencies"
    """Waiting for dependencies: created ``awaiting`` with ``depends_on``; the scheduler
    releases it once every parent has succeeded."""
    CONCURRENCY = "concurrency"
    """Delivered to a worker, which holds it until a concurrency slot of its queue (or of its
    ``concurrency_key``) is free (``throttled``)."""

    RATE_LIMITED = "rate_limited"
    """Delivered to a worker, which holds it until its queue's (or key's) start rate allows
    one more (``throttled``)."""
