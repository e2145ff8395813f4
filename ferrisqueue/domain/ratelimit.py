"""The per-key submission limit: a token bucket, as a pure function of its state and a time.

A bucket holds up to ``capacity`` tokens and gains ``rate`` per second; submitting ``n`` jobs
takes ``n`` tokens (a batch counts each of its jobs). When there are too few the request is
refused and told how long until there would be enough. The state (tokens, when) lives in a
KV bucket shared by every gateway replica (:mod:`ferrisqueue.log.ratelimits`); this module
only decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    """Tokens left at time ``at`` (seconds, the gateways' wall clock)."""

    tokens: float
    at: float


@dataclass(frozen=True, slots=True)
class Decision:
    """Either the bucket after the take (``allowed``) or the seconds to wait: ``wait``
    exactly, ``retry_after`` rounded up to whole seconds (an HTTP ``Retry-After``)."""

    allowed: bool
    bucket: Bucket
    retry_after: int = 0
    wait: float = 0.0


def take(bucket: Bucket | None, cost: int, *, rate: float, capacity: int, now: float) -> Decision:
    """Take ``cost`` tokens from ``bucket`` (None: a full one) at ``now``.

    A clock that went backwards (another replica's, a little behind) adds no tokens. A cost
    above ``capacity`` can never be paid: refused with the wait for a full bucket, and the
    caller should say that the batch must be split."""
    if bucket is None:
        current = float(capacity)
    else:
        elapsed = max(0.0, now - bucket.at)
        current = min(float(capacity), bucket.tokens + elapsed * rate)
    if cost <= current:
        return Decision(True, Bucket(current - cost, now))
    wait = (min(float(cost), float(capacity)) - current) / rate
    return Decision(False, Bucket(current, now), retry_after=max(1, math.ceil(wait)), wait=wait)
