"""Token buckets shared by every process: in a KV bucket, taken with compare-and-set.

Two users: the gateway's per-API-key submission limits (entry ``<key id>``), and the
workers' start-rate limits of a queue (entries ``q.<queue>.rate`` and
``q.<queue>.rate.<concurrency key>``, see :mod:`ferrisqueue.domain.limits`; the same bucket
holds the queues' concurrency slots, :mod:`ferrisqueue.log.slots`).

Each limited key has one entry in ``FQ_RATELIMITS`` (stream ``KV_FQ_RATELIMITS``, in memory:
a bucket lost with a restarted server is simply full again) holding its tokens and when they
were counted. A take reads the entry, decides with :func:`~ferrisqueue.domain.ratelimit.take`
and writes the result guarded by ``Nats-Expected-Last-Subject-Sequence`` (compare-and-set on
the entry's revision): when two replicas take at once one write fails and that replica reads
again, so no token is spent twice. Cost: two JetStream round trips per limited request (a
read, a guarded write); keys without a limit cost nothing. Entries of idle keys expire after
an hour (``max_age``), which equals a full bucket.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from ferrisqueue.domain.ratelimit import Bucket, Decision, take
from ferrisqueue.errors import ConcurrentChange, NatsUnavailable
from ferrisqueue.log.port import EXPECTED_LAST_SUBJECT_SEQ, LogPort

BUCKET = "FQ_RATELIMITS"
KV_STREAM = f"KV_{BUCKET}"
KV_PREFIX = f"$KV.{BUCKET}."
_TRIES = 20


class RateLimits:
    """Takes tokens from the shared bucket of a key (an API key's id, or a queue's KV key)."""

    def __init__(self, log: LogPort, *, clock: Callable[[], float] = time.time) -> None:
        self._log = log
        self._clock = clock

    async def take(self, key_id: str, cost: int, *, rate: float, capacity: int) -> Decision:
        """Take ``cost`` tokens from ``key_id``'s bucket, or learn how long to wait."""
        subject = f"{KV_PREFIX}{key_id}"
        for _ in range(_TRIES):
            found = await self._log.read(KV_STREAM, subject)
            bucket, revision = None, 0
            if found is not None:
                revision = found.seq
                bucket = _decode(found.data)
            decision = take(bucket, cost, rate=rate, capacity=capacity, now=self._clock())
            if not decision.allowed:
                return decision  # nothing taken: nothing to write
            body = json.dumps({"tokens": decision.bucket.tokens, "at": decision.bucket.at})
            try:
                await self._log.publish(
                    subject,
                    body.encode(),
                    stream=KV_STREAM,
                    headers={EXPECTED_LAST_SUBJECT_SEQ: str(revision)},
                )
            except ConcurrentChange:
                continue  # another replica took meanwhile: count again
            return decision
        raise NatsUnavailable(f"the rate limit of key {key_id} is too contended; retry")


def _decode(data: bytes) -> Bucket | None:
    try:
        raw = json.loads(data)
        return Bucket(float(raw["tokens"]), float(raw["at"]))
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: treat as full rather than lock the key out
