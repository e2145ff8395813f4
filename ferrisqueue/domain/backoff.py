"""Retry timing: exponential backoff with jitter, a pure function of the attempt.

``delay(n) = min(cap, base * 2**(n-1))``, then spread by ``± jitter`` of itself so that jobs
that failed together do not all come back in the same instant (the thundering herd). The
random draw is a parameter, so the policy stays pure and tests can pin it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RetryPolicy(BaseModel):
    """How long a failed job waits before its next attempt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: float = Field(default=1.0, gt=0, le=86_400, description="Wait after attempt 1 (s).")
    cap: float = Field(default=300.0, gt=0, le=7 * 86_400, description="Longest wait (s).")
    jitter: float = Field(
        default=0.2, ge=0.0, le=1.0, description="Spread of each wait, as a fraction of it."
    )

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetryPolicy:
        if self.cap < self.base:
            raise ValueError("cap must not be smaller than base")
        return self

    def delay(self, attempt: int, draw: float) -> float:
        """Seconds to wait after failed attempt ``attempt`` (from 1); ``draw`` in [0, 1)."""
        nominal = min(self.cap, self.base * 2.0 ** min(max(attempt - 1, 0), 64))
        return nominal * (1.0 + self.jitter * (2.0 * draw - 1.0))
