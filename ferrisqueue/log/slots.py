"""Concurrency slots shared by every worker: slot tables in the ``FQ_RATELIMITS`` KV bucket.

One entry per limited scope (``q.<queue>.slots``, ``q.<queue>.slots.<concurrency key>``)
holds its slot table (:mod:`ferrisqueue.domain.limits`: job id -> lease expiry). Every change
reads the entry, decides with the pure functions and writes it back guarded by
``Nats-Expected-Last-Subject-Sequence`` (compare-and-set on the entry's revision): of two
workers that change one table at once, one write fails and that worker reads again, so a
slot is never given twice. Cost: a read and a write per change, on limited queues only.

The bucket is in memory (like the token buckets): a restarted nats-server forgets the
tables, so until the jobs running then have finished, up to twice a limit may run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ferrisqueue.domain.limits import Holders, claim, decode_holders, encode_holders, release, renew
from ferrisqueue.errors import ConcurrentChange, NatsUnavailable
from ferrisqueue.log.port import EXPECTED_LAST_SUBJECT_SEQ, LogPort
from ferrisqueue.log.ratelimits import KV_PREFIX, KV_STREAM

_TRIES = 50


class SlotBook:
    """Takes, renews and gives back slots of shared slot tables."""

    def __init__(self, log: LogPort, *, clock: Callable[[], float] = time.time) -> None:
        self._log = log
        self._clock = clock

    async def claim(self, key: str, holder: str, *, slots: int, ttl: float) -> int | None:
        """Take a slot of ``key``'s table for ``holder`` for ``ttl`` seconds: the number of
        slots now held, or None when all ``slots`` are held by others (nothing written)."""
        taken = await self._update(
            key, lambda held, now: claim(held, holder, slots=slots, now=now, ttl=ttl)
        )
        return None if taken is None else len(taken)

    async def renew(self, key: str, holders: set[str], *, ttl: float) -> None:
        """Extend the leases of ``holders`` to ``ttl`` seconds from now."""
        await self._update(key, lambda held, now: renew(held, holders, now=now, ttl=ttl))

    async def release(self, key: str, holder: str) -> None:
        """Give ``holder``'s slot back."""
        await self._update(key, lambda held, now: release(held, holder, now=now))

    async def holders(self, key: str) -> Holders:
        """The table as stored (expired leases included)."""
        found = await self._log.read(KV_STREAM, f"{KV_PREFIX}{key}")
        return {} if found is None else decode_holders(found.data)

    async def _update(
        self, key: str, change: Callable[[Holders, float], Holders | None]
    ) -> Holders | None:
        subject = f"{KV_PREFIX}{key}"
        for _ in range(_TRIES):
            found = await self._log.read(KV_STREAM, subject)
            held, revision = ({}, 0) if found is None else (decode_holders(found.data), found.seq)
            changed = change(held, self._clock())
            if changed is None:
                return None
            try:
                await self._log.publish(
                    subject,
                    encode_holders(changed),
                    stream=KV_STREAM,
                    headers={EXPECTED_LAST_SUBJECT_SEQ: str(revision)},
                )
            except ConcurrentChange:
                continue  # another worker changed the table meanwhile: decide again
            return changed
        raise NatsUnavailable(f"the slots of {key} are too contended; retry")
