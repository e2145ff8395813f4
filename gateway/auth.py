"""Gateway authentication: the API keys a replica knows, and the per-key submission limit.

:class:`KeyCache` holds every key record in memory, so checking a key costs a dict lookup
and one SHA-256 — no NATS round trip. It is loaded when the gateway reaches NATS, kept
current by a watch of the key store (``$KV.FQ_KEYS.>``: a revocation arrives as it is
stored, on every replica at once) and re-read every ``FQ_AUTH_REFRESH_SECONDS`` in case a
change was missed while the connection was down. A revocation is never undone by a re-read
that raced with it: a record, once seen revoked, stays revoked.

The route dependency itself (``Authorized(scope)``) is in :mod:`gateway.deps`.
"""

from __future__ import annotations

import asyncio
import logging

from ferrisqueue.domain.apikeys import KeyRecord, key_id_of
from ferrisqueue.domain.principal import Principal
from ferrisqueue.errors import FerrisQueueError, NatsUnavailable
from ferrisqueue.log.keybook import KeyBook
from ferrisqueue.log.port import LogPort
from ferrisqueue.log.ratelimits import RateLimits
from ferrisqueue.runloop import reap

log = logging.getLogger(__name__)


class RateLimited(FerrisQueueError):
    """The key submitted more jobs than its limit allows; answered 429 with Retry-After."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class KeyCache:
    """Every key record, by id, kept current; see the module docstring."""

    def __init__(self, log_port: LogPort, *, refresh_seconds: float) -> None:
        self._book = KeyBook(log_port)
        self._limits = RateLimits(log_port)
        self._refresh_seconds = refresh_seconds
        self._records: dict[str, KeyRecord] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Watch first, then load: a change stored in between is seen by the watch."""
        await self._book.watch(self._changed)
        await self.reload()
        if not any(r.active for r in self._records.values()):
            log.warning(
                "auth is on and the key store holds no active key: every request but the "
                "health checks will be refused (create one with `fq keys create`)"
            )
        self._task = asyncio.create_task(self._refresh(), name="key-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            await reap(self._task)

    async def reload(self) -> None:
        """Re-read every record (revocations already seen stay)."""
        loaded = {r.id: r for r in await self._book.records()}
        for key_id, known in self._records.items():
            if not known.active and key_id in loaded:
                loaded[key_id] = known
        self._records = loaded

    async def _changed(self, record: KeyRecord) -> None:
        known = self._records.get(record.id)
        if known is not None and not known.active:
            return  # revocation is final
        self._records[record.id] = record
        if not record.active:
            log.info("key %s (%s) revoked", record.name, record.id)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)  # a period, not a synchronisation
            try:
                await self.reload()
            except NatsUnavailable as exc:
                log.warning("could not re-read the key store: %s", exc)

    async def authenticate(self, key: str) -> KeyRecord | None:
        """The active record ``key`` belongs to, or None (malformed, unknown, revoked)."""
        key_id = key_id_of(key)
        if key_id is None:
            return None
        record = self._records.get(key_id)
        if record is None:
            # Created a moment ago, its watch message not here yet (or missed): look once.
            record = await self._book.get(key_id)
            if record is not None:
                await self._changed(record)
                record = self._records[key_id]
        if record is None or not record.matches(key):
            return None
        return record

    async def charge(self, principal: Principal, jobs: int) -> None:
        """Count ``jobs`` submissions against the principal's key; :class:`RateLimited` when
        its limit does not allow them now. Keys without a limit cost nothing."""
        record = self._records.get(principal.key_id or "")
        if record is None or record.rate is None:
            return
        capacity = record.capacity
        decision = await self._limits.take(record.id, jobs, rate=record.rate, capacity=capacity)
        if decision.allowed:
            return
        if jobs > capacity:
            raise RateLimited(
                f"{jobs} jobs at once exceed this key's burst of {capacity}; split the batch",
                decision.retry_after,
            )
        raise RateLimited(
            f"key {record.name} may submit {record.rate:g} jobs per second "
            f"(burst {capacity}); retry later",
            decision.retry_after,
        )
