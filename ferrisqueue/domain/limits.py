"""Flow limits of a queue: how many of its jobs may run at once and how fast they may start,
in the whole queue and per ``concurrency_key``, across every worker. Pure: no clock, no I/O.

A queue's limits are set by an operator as a queue event (:mod:`ferrisqueue.domain.queuecontrol`);
workers enforce them before a job's ``started`` with shared state in the ``FQ_RATELIMITS``
KV bucket (:mod:`ferrisqueue.log.slots`, :mod:`ferrisqueue.log.ratelimits`):

* a **concurrency** limit is a slot table: the job ids holding a slot, each with the time its
  slot lease expires. A holder renews its leases while the job runs and gives the slot back
  when the job ends; a holder that died (SIGKILL) stops renewing, and its slot is free again
  once the lease has expired: the same time after which JetStream redelivers its job.
* a **rate** limit is a token bucket (:func:`ferrisqueue.domain.ratelimit.take`) of ``burst``
  tokens refilled at ``limit / period`` per second: one token per start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

MAX_SLOTS = 1000
"""The largest concurrency limit: a slot table holds one entry per running job."""


class RateLimit(BaseModel):
    """At most ``limit`` starts per ``period`` seconds, with bursts of up to ``burst``
    (default: ``limit``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(ge=1, le=1_000_000, description="Starts allowed per period.")
    period: float = Field(default=1.0, gt=0, le=86_400, description="The period, in seconds.")
    burst: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Starts at once after a quiet spell."
    )

    @property
    def per_second(self) -> float:
        return self.limit / self.period

    @property
    def capacity(self) -> int:
        return self.burst or self.limit

    def __str__(self) -> str:
        return f"{self.limit}/{self.period:g}s"


class QueueLimits(BaseModel):
    """A queue's limits; ``None`` is no limit. Per-key limits apply to each
    ``concurrency_key`` separately, and only to jobs that have one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int | None = Field(
        default=None, ge=1, le=MAX_SLOTS, description="Jobs of the queue running at once."
    )
    key_concurrency: int | None = Field(
        default=None, ge=1, le=MAX_SLOTS, description="Jobs of one key running at once."
    )
    rate: RateLimit | None = Field(default=None, description="Starts of the queue's jobs.")
    key_rate: RateLimit | None = Field(default=None, description="Starts of one key's jobs.")

    @property
    def unlimited(self) -> bool:
        return self == UNLIMITED


UNLIMITED = QueueLimits()


class LimitKind(StrEnum):
    """What a job waits for; the ``reason`` of its ``throttled`` event."""

    CONCURRENCY = "concurrency"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class Scope:
    """One limit that applies to one job: its kind, the KV key of its shared state, the
    number allowed, and a name for people."""

    kind: LimitKind
    key: str
    name: str
    slots: int = 0
    rate: RateLimit | None = None


def scopes_for(queue: str, key: str | None, limits: QueueLimits) -> list[Scope]:
    """The limits a job of ``queue`` with ``concurrency_key`` ``key`` must pass, in the order
    to take them: slots (the key's first, then the queue's, always in this order so no two
    jobs wait on each other), then tokens (taken last, just before the start, so a start
    never lags its token)."""
    found: list[Scope] = []
    if key is not None and limits.key_concurrency:
        found.append(
            Scope(
                LimitKind.CONCURRENCY,
                f"q.{queue}.slots.{key}",
                f"key {key}",
                slots=limits.key_concurrency,
            )
        )
    if limits.concurrency:
        found.append(
            Scope(LimitKind.CONCURRENCY, f"q.{queue}.slots", f"queue {queue}", limits.concurrency)
        )
    if key is not None and limits.key_rate:
        found.append(
            Scope(
                LimitKind.RATE_LIMITED, f"q.{queue}.rate.{key}", f"key {key}", rate=limits.key_rate
            )
        )
    if limits.rate:
        found.append(
            Scope(LimitKind.RATE_LIMITED, f"q.{queue}.rate", f"queue {queue}", rate=limits.rate)
        )
    return found


Holders = dict[str, float]
"""A slot table: holder (job id) -> when its lease expires (seconds, the workers' wall clock)."""


def decode_holders(data: bytes) -> Holders:
    """A stored slot table; an unreadable one is empty (a limit must never lock a queue)."""
    try:
        raw = json.loads(data)
        return {str(k): float(v) for k, v in raw.items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def encode_holders(holders: Holders) -> bytes:
    return json.dumps(holders, separators=(",", ":")).encode()


def claim(holders: Holders, holder: str, *, slots: int, now: float, ttl: float) -> Holders | None:
    """The table with ``holder`` holding a slot until ``now + ttl``, expired leases dropped;
    None when all ``slots`` are held by others. A holder that holds one already (a
    redelivery of its job) keeps it: a job never counts twice."""
    live = {h: until for h, until in holders.items() if until > now}
    if holder not in live and len(live) >= slots:
        return None
    live[holder] = now + ttl
    return live


def renew(holders: Holders, mine: set[str], *, now: float, ttl: float) -> Holders:
    """The table with the leases of ``mine`` extended to ``now + ttl`` (a lease that expired
    is taken again: its job still runs), expired leases of others dropped."""
    live = {h: until for h, until in holders.items() if until > now}
    live.update(dict.fromkeys(mine, now + ttl))
    return live


def release(holders: Holders, holder: str, *, now: float) -> Holders:
    """The table without ``holder``, expired leases dropped."""
    return {h: until for h, until in holders.items() if until > now and h != holder}
