"""Per-queue policy (lease, attempts, timeout, backoff) and how a job's own options refine it.

Pure: settings supply the queue's policy, the job's creation event its overrides.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from ferrisqueue.domain.backoff import RetryPolicy
from ferrisqueue.domain.events import JobSpec


class QueuePolicy(BaseModel):
    """How the jobs of one queue are leased, timed out and retried."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ack_wait: float = Field(
        default=30.0, ge=1.0, description="Visibility timeout: a job's lease without heartbeats."
    )
    max_attempts: int = Field(
        default=3, ge=1, le=1000, description="Attempts before a failing job is dead-lettered."
    )
    timeout: float | None = Field(
        default=None, gt=0, description="Seconds one attempt may run (none: no limit)."
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


class QueueOverrides(BaseModel):
    """What ``FQ_QUEUES`` may set for one queue; unset fields keep the global default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ack_wait: float | None = Field(default=None, ge=1.0)
    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    timeout: float | None = Field(default=None, gt=0)
    retry: RetryPolicy | None = None

    def over(self, default: QueuePolicy) -> QueuePolicy:
        """``default`` with this queue's settings applied."""
        return _refined(default, **{name: getattr(self, name) for name in type(self).model_fields})


def for_job(queue: QueuePolicy, job: JobSpec) -> QueuePolicy:
    """The policy one job runs under: its queue's, refined by the job's own options."""
    return _refined(queue, max_attempts=job.max_attempts, timeout=job.timeout, retry=job.retry)


def _refined(policy: QueuePolicy, **overrides: object) -> QueuePolicy:
    update = {k: v for k, v in overrides.items() if v is not None}
    return policy.model_copy(update=update) if update else policy  # frozen: safe to share


def retry_at(
    policy: QueuePolicy, *, attempt: int, budget_start: int, now: datetime, draw: float
) -> datetime | None:
    """When a job whose attempt ``attempt`` failed (retryably) runs again, or ``None`` if
    its attempts are used up. ``budget_start`` is the attempt count when its budget began
    (0, or the count at its last redrive: a redriven job gets a fresh budget)."""
    if attempt - budget_start >= policy.max_attempts:
        return None
    return now + timedelta(seconds=policy.retry.delay(attempt - budget_start, draw))
