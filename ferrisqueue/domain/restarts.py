"""When a supervised process that died is started again, and when to give up: pure rules.

``fq up`` restarts a child that exits without being asked to, after a backoff that doubles
with each exit in a row (:class:`~ferrisqueue.domain.backoff.RetryPolicy`, without jitter: one
process has no herd to spread) up to a cap. A child that stayed up ``reset_after`` seconds
before it died starts its count afresh, so a rare crash costs the shortest wait. A child that
exits ``crash_loop_exits`` times within ``crash_loop_window`` seconds is in a crash loop: a
restart will not mend it (a bad setting, a port taken), so the supervisor stops everything
and says why instead of restarting for ever.

Time is a parameter (``now``, ``started_at``: any monotonic clock), so tests drive these
rules with plain numbers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ferrisqueue.domain.backoff import RetryPolicy


class RestartPolicy(BaseModel):
    """How a supervisor restarts a child that died, and what it calls a crash loop."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: float = Field(default=1.0, gt=0, le=3600, description="Wait before restart 1 (s).")
    cap: float = Field(default=30.0, gt=0, le=3600, description="Longest wait (s).")
    reset_after: float = Field(
        default=30.0, gt=0, description="Uptime after which a child's exits in a row reset (s)."
    )
    crash_loop_exits: int = Field(
        default=5, ge=1, le=1000, description="Exits within the window that stop everything."
    )
    crash_loop_window: float = Field(default=60.0, gt=0, description="The crash-loop window (s).")

    @model_validator(mode="after")
    def _a_crash_loop_can_be_seen(self) -> RestartPolicy:
        if self.cap < self.base:
            raise ValueError("the restart backoff's cap must not be smaller than its base")
        # The waits alone before the last counted exit must fit in the window, or no crash
        # loop could ever be recognised and a broken child would restart for ever.
        waits = sum(self.delay(n) for n in range(1, self.crash_loop_exits))
        if waits >= self.crash_loop_window:
            raise ValueError(
                f"a crash loop of {self.crash_loop_exits} exits can never fit in "
                f"{self.crash_loop_window:g}s: the restart waits alone take {waits:g}s"
            )
        return self

    def delay(self, in_a_row: int) -> float:
        """Seconds to wait before starting a child again after its ``in_a_row``-th exit."""
        return RetryPolicy(base=self.base, cap=self.cap, jitter=0.0).delay(in_a_row, 0.0)


@dataclass(frozen=True, slots=True)
class Restart:
    """Start the child again after ``delay`` seconds; it is its ``restart``-th restart."""

    delay: float
    restart: int
    recent_exits: int


@dataclass(frozen=True, slots=True)
class CrashLoop:
    """Give up: the child exited ``recent_exits`` times within the window."""

    recent_exits: int
    window: float


@dataclass
class RestartHistory:
    """One child's exits, and the decision each new exit gets."""

    policy: RestartPolicy
    restarts: int = 0
    """Restarts so far (never reset: the operator's count)."""
    in_a_row: int = 0
    """Exits since the child last stayed up ``reset_after`` seconds (drives the backoff)."""
    _exits: deque[float] = field(default_factory=deque)

    def exited(self, *, started_at: float, now: float) -> Restart | CrashLoop:
        """The child started at ``started_at`` exited at ``now``: restart it, or give up."""
        if now - started_at >= self.policy.reset_after:
            self.in_a_row = 0
        self._exits.append(now)
        while self._exits and self._exits[0] <= now - self.policy.crash_loop_window:
            self._exits.popleft()
        if len(self._exits) >= self.policy.crash_loop_exits:
            return CrashLoop(len(self._exits), self.policy.crash_loop_window)
        self.in_a_row += 1
        self.restarts += 1
        return Restart(self.policy.delay(self.in_a_row), self.restarts, len(self._exits))
