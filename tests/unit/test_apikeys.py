"""API keys: format, storage as a hash, scopes, the key store and the admin key of `fq up`,
and the token bucket of the per-key rate limit."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ferrisqueue.cli.adminkey import ensure_admin_key
from ferrisqueue.domain.apikeys import hash_key, key_id_of, new_key
from ferrisqueue.domain.principal import ALL_SCOPES, Principal, Scope, parse_scopes
from ferrisqueue.domain.ratelimit import Bucket, take
from ferrisqueue.log.keybook import KeyBook, KeyNameTaken, KeyNotFound
from ferrisqueue.log.memlog import MemoryLog
from ferrisqueue.log.ratelimits import RateLimits
from ferrisqueue.log.topology import ensure_streams
from ferrisqueue.settings import Settings

pytestmark = pytest.mark.timeout(5)


@pytest.fixture
async def log() -> MemoryLog:
    memory = MemoryLog()
    await ensure_streams(memory, Settings(_env_file=None))  # type: ignore[call-arg]
    return memory


def test_a_key_names_its_record_and_only_its_hash_is_stored() -> None:
    key_id, key = new_key()
    assert key.startswith(f"fq_{key_id}_") and len(key) == 3 + 16 + 1 + 43
    assert key_id_of(key) == key_id
    assert key_id_of(key + "x") is None and key_id_of("Bearer nonsense") is None
    assert hash_key(key) != key and len(hash_key(key)) == 64
    assert new_key()[1] != key


def test_scopes_parse_by_name_and_unknown_ones_are_refused() -> None:
    assert parse_scopes(["jobs:read", "ops:read"]) == {Scope.JOBS_READ, Scope.OPS_READ}
    assert parse_scopes(["*"]) == ALL_SCOPES
    with pytest.raises(ValueError, match="jobs:delete"):
        parse_scopes(["jobs:delete"])
    assert Principal("ci", frozenset({Scope.JOBS_WRITE}), "0" * 16).actor == "key:ci"


async def test_the_store_holds_the_hash_and_a_revoked_key_no_longer_matches(
    log: MemoryLog,
) -> None:
    book = KeyBook(log)
    record, key = await book.create("ci", frozenset({Scope.JOBS_WRITE}), rate=5)
    stored = await log.read("KV_FQ_KEYS", f"$KV.FQ_KEYS.{record.id}")
    assert stored is not None and key.encode() not in stored.data
    assert hash_key(key).encode() in stored.data
    found = await book.get(record.id)
    tampered = key[:-1] + ("B" if key.endswith("A") else "A")  # its last character changed
    assert found is not None and found.matches(key) and not found.matches(tampered)
    with pytest.raises(KeyNameTaken):
        await book.create("ci", frozenset({Scope.JOBS_READ}))

    revoked = await book.revoke("ci")
    assert revoked.revoked_at is not None
    again = await book.get(record.id)
    assert again is not None and not again.matches(key)
    with pytest.raises(KeyNotFound):
        await book.revoke(record.id)
    # The name is free again once revoked; the list shows both.
    await book.create("ci", frozenset({Scope.JOBS_READ}))
    assert [(r.name, r.active) for r in await book.records()] == [("ci", False), ("ci", True)]


async def test_fq_up_writes_the_admin_key_0600_once_and_reuses_it(
    log: MemoryLog, tmp_path: Path
) -> None:
    path = tmp_path / "var" / "admin.key"
    made = await ensure_admin_key(log, path)
    assert made is not None and path.read_text().strip() == made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert await ensure_admin_key(log, path) is None  # reused, not printed again

    record = await KeyBook(log).get(key_id_of(made) or "")
    assert record is not None and record.name == "admin" and set(record.scopes) == ALL_SCOPES

    # Revoked: the next `fq up` rotates it.
    await KeyBook(log).revoke("admin")
    rotated = await ensure_admin_key(log, path)
    assert rotated is not None and rotated != made and path.read_text().strip() == rotated


async def test_a_store_that_lost_the_admin_key_gets_the_files_key_again(tmp_path: Path) -> None:
    path = tmp_path / "admin.key"
    first = MemoryLog()
    await ensure_streams(first, Settings(_env_file=None))  # type: ignore[call-arg]
    made = await ensure_admin_key(first, path)
    fresh = MemoryLog()
    await ensure_streams(fresh, Settings(_env_file=None))  # type: ignore[call-arg]
    assert await ensure_admin_key(fresh, path) is None
    record = await KeyBook(fresh).get(key_id_of(made or "") or "")
    assert record is not None and record.matches(made or "")


def test_the_bucket_refills_at_the_rate_and_a_batch_takes_one_token_per_job() -> None:
    first = take(None, 3, rate=2.0, capacity=4, now=100.0)
    assert first.allowed and first.bucket == Bucket(1.0, 100.0)
    refused = take(first.bucket, 2, rate=2.0, capacity=4, now=100.0)
    assert not refused.allowed and refused.retry_after == 1
    later = take(first.bucket, 2, rate=2.0, capacity=4, now=100.5)
    assert later.allowed and later.bucket.tokens == pytest.approx(0.0)
    # Never more than the capacity, however long it was idle; a clock behind adds nothing.
    assert take(Bucket(0, 0), 5, rate=2.0, capacity=4, now=1e6).allowed is False
    assert take(Bucket(1, 100), 2, rate=2.0, capacity=4, now=50).allowed is False


def test_the_wait_is_how_long_until_enough_tokens() -> None:
    refused = take(Bucket(0, 0), 10, rate=0.5, capacity=10, now=0)
    assert not refused.allowed and refused.retry_after == 20


async def test_replicas_sharing_the_bucket_never_spend_a_token_twice(log: MemoryLog) -> None:
    now = [1000.0]
    one, two = RateLimits(log, clock=lambda: now[0]), RateLimits(log, clock=lambda: now[0])
    allowed = 0
    for limits in (one, two) * 5:
        decision = await limits.take("k", 1, rate=1.0, capacity=4)
        allowed += decision.allowed
    assert allowed == 4
    now[0] += 2.0
    assert (await two.take("k", 2, rate=1.0, capacity=4)).allowed
    assert not (await one.take("k", 1, rate=1.0, capacity=4)).allowed
