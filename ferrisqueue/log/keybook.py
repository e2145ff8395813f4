"""The key store: API key records in the KV bucket ``FQ_KEYS``, by key id.

Each record (:class:`~ferrisqueue.domain.apikeys.KeyRecord`) holds a key's name, scopes, rate
limit and the SHA-256 of the key — never the key, which is shown once when it is created.
Revoking writes the record again with ``revoked_at`` set (the record stays, so ``fq keys
list`` shows what was revoked and when). Like :mod:`ferrisqueue.log.cronbook`, the bucket is
a stream (``KV_FQ_KEYS``, one message per key on ``$KV.FQ_KEYS.<id>``) used through the log
port: writes are guarded with ``Nats-Expected-Last-Subject-Sequence``.

Every gateway replica keeps the records in memory (:class:`~gateway.auth.KeyCache`) and
watches ``$KV.FQ_KEYS.>``: a revocation stored here reaches every replica as the message is
stored, so it takes effect at once everywhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from pydantic import ValidationError

from ferrisqueue.domain.apikeys import KeyRecord, hash_key, key_id_of, new_key
from ferrisqueue.domain.principal import Scope
from ferrisqueue.errors import ConcurrentChange, ConfigurationError, FerrisQueueError
from ferrisqueue.log.port import EXPECTED_LAST_SUBJECT_SEQ, LogPort, StoredMessage

BUCKET = "FQ_KEYS"
KV_STREAM = f"KV_{BUCKET}"
KV_PREFIX = f"$KV.{BUCKET}."


class KeyNotFound(FerrisQueueError):
    """No key has that name or id (or several active keys share the name)."""


class KeyNameTaken(FerrisQueueError):
    """An active key already has that name: names are what events record, so they are
    unique among active keys."""


def record_of(data: bytes) -> KeyRecord | None:
    """The record a message holds; None for a delete marker or anything unreadable."""
    if not data:
        return None
    try:
        return KeyRecord.model_validate_json(data)
    except ValidationError:
        return None


class KeyBook:
    """Create, list and revoke API keys (create the bucket first: ``fq init``)."""

    def __init__(self, log: LogPort) -> None:
        self._log = log

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record of ``key_id``, or None."""
        found = await self._log.read(KV_STREAM, f"{KV_PREFIX}{key_id}")
        return None if found is None else record_of(found.data)

    async def records(self) -> list[KeyRecord]:
        """Every record, revoked ones too, oldest first."""
        found: list[KeyRecord] = []
        seq = 1
        while True:
            raw = await self._log.read(KV_STREAM, f"{KV_PREFIX}>", from_seq=seq)
            if raw is None:
                break
            if (record := record_of(raw.data)) is not None:
                found.append(record)
            seq = raw.seq + 1
        return sorted(found, key=lambda r: r.created_at)

    async def create(
        self,
        name: str,
        scopes: frozenset[Scope],
        *,
        rate: float | None = None,
        burst: int | None = None,
        key: str | None = None,
    ) -> tuple[KeyRecord, str]:
        """Store a new key named ``name``; returns its record and the key itself (the only
        time it exists outside the caller's hands). ``key``: store this key (one made
        earlier, e.g. ``var/admin.key``) instead of a fresh one."""
        if any(r.name == name and r.active for r in await self.records()):
            raise KeyNameTaken(f"an active key is already named {name}; revoke it first")
        if key is None:
            key_id, key = new_key()
        else:
            found_id = key_id_of(key)
            if found_id is None:
                raise ConfigurationError("not a FerrisQueue API key (fq_<id>_<secret>)")
            key_id = found_id
        record = KeyRecord(
            id=key_id,
            name=name,
            scopes=sorted(scopes),
            hash=hash_key(key),
            rate=rate,
            burst=burst,
            created_at=datetime.now(UTC),
        )
        await self._write(record, revision=0)
        return record, key

    async def revoke(self, name_or_id: str) -> KeyRecord:
        """Revoke the active key with this id or name; returns its revoked record."""
        for _ in range(5):
            current, revision = await self._find(name_or_id)
            revoked = current.model_copy(update={"revoked_at": datetime.now(UTC)})
            try:
                await self._write(revoked, revision=revision)
            except ConcurrentChange:
                continue
            return revoked
        raise ConcurrentChange(f"key {name_or_id} kept changing; retry")

    async def watch(self, changed: Callable[[KeyRecord], Awaitable[None]]) -> None:
        """Call ``changed`` with each record stored from now on (best effort: see
        :meth:`~ferrisqueue.log.port.LogPort.watch`)."""

        async def arrived(_subject: str, data: bytes) -> None:
            if (record := record_of(data)) is not None:
                await changed(record)

        await self._log.watch(f"{KV_PREFIX}>", arrived)

    async def _find(self, name_or_id: str) -> tuple[KeyRecord, int]:
        raw: StoredMessage | None = None
        if len(name_or_id) == 16:
            raw = await self._log.read(KV_STREAM, f"{KV_PREFIX}{name_or_id}")
        record = None if raw is None else record_of(raw.data)
        if raw is not None and record is not None and record.active:
            return record, raw.seq
        named = [r for r in await self.records() if r.name == name_or_id and r.active]
        if len(named) != 1:
            raise KeyNotFound(f"no active key named or with id {name_or_id}")
        found = await self._log.read(KV_STREAM, f"{KV_PREFIX}{named[0].id}")
        if found is None:
            raise KeyNotFound(f"no active key named or with id {name_or_id}")
        return named[0], found.seq

    async def _write(self, record: KeyRecord, *, revision: int) -> None:
        await self._log.publish(
            f"{KV_PREFIX}{record.id}",
            record.model_dump_json().encode(),
            stream=KV_STREAM,
            headers={EXPECTED_LAST_SUBJECT_SEQ: str(revision)},
        )
