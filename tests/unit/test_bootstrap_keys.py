"""Keys a deployment's operator made, imported by `fq init`: the format check that refuses
malformed, placeholder and weak keys, the import (idempotent, rotation revokes the previous
key, a revoked key never comes back), and the dashboard's own key of `fq up`."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from ferrisqueue.cli.adminkey import DASHBOARD_SCOPES, ensure_dashboard_key
from ferrisqueue.cli.bootstrap import bootstrap_keys, import_bootstrap_keys
from ferrisqueue.domain.apikeys import WeakKey, checked_key, key_id_of, new_key
from ferrisqueue.domain.principal import ALL_SCOPES, Scope
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.log.keybook import KeyBook
from ferrisqueue.log.memlog import MemoryLog
from ferrisqueue.log.topology import ensure_streams
from ferrisqueue.settings import Settings

pytestmark = pytest.mark.timeout(5)

PLACEHOLDER = "CHANGE-ME-run-fq-keys-generate"


def settings(**fields: Any) -> Settings:
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


@pytest.fixture
async def log() -> MemoryLog:
    memory = MemoryLog()
    await ensure_streams(memory, settings())
    return memory


def test_a_generated_key_passes_the_check_and_surrounding_space_is_dropped() -> None:
    _, key = new_key()
    assert checked_key(f"  {key}\n") == key


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "is not a FerrisQueue API key"),
        (PLACEHOLDER, "is not a FerrisQueue API key"),
        ("fq_0123456789abcdef_" + "A" * 43, "too regular"),
        ("fq_0000000000000000_" + new_key()[1][-43:], "too regular"),
        ("fq_0123456789abcdef_" + "abcd" * 10 + "abc", "too regular"),
        # 43 base64 characters hold 258 bits: the last one's low bits must be zero.
        (new_key()[1][:-1] + "B", "does not decode to 32 bytes"),
        (new_key()[1] + "x", "is not a FerrisQueue API key"),
        (new_key()[1].upper(), "is not a FerrisQueue API key"),
    ],
)
def test_malformed_placeholder_and_weak_keys_are_refused_saying_how_to_make_one(
    key: str, why: str
) -> None:
    with pytest.raises(WeakKey, match=why) as refused:
        checked_key(key, what="FQ_BOOTSTRAP_ADMIN_KEY")
    assert "FQ_BOOTSTRAP_ADMIN_KEY" in str(refused.value)
    assert "fq keys generate" in str(refused.value)
    assert isinstance(refused.value, ConfigurationError)


def test_a_refusal_never_echoes_a_key_shaped_secret() -> None:
    key = "fq_0123456789abcdef_" + "A" * 43
    with pytest.raises(WeakKey) as refused:
        checked_key(key + "!")
    assert "A" * 20 not in str(refused.value)


async def test_fq_init_imports_both_keys_with_their_scopes_and_a_rerun_changes_nothing(
    log: MemoryLog,
) -> None:
    (_, admin), (_, dashboard) = new_key(), new_key()
    wanted = settings(bootstrap_admin_key=admin, bootstrap_dashboard_key=dashboard)

    first = await import_bootstrap_keys(log, wanted)
    again = await import_bootstrap_keys(log, wanted)

    assert [line.split(")")[-1] for line in first] == [" imported", " imported"]
    assert all(line.endswith("already stored") for line in again)
    records = {r.name: r for r in await KeyBook(log).records()}
    assert set(records) == {"admin", "dashboard"}
    assert frozenset(records["admin"].scopes) == ALL_SCOPES
    assert frozenset(records["dashboard"].scopes) == {Scope.JOBS_READ, Scope.OPS_READ}
    assert records["admin"].matches(admin) and records["dashboard"].matches(dashboard)
    assert admin not in str(records["admin"].model_dump())  # only the hash is stored


async def test_a_new_bootstrap_key_replaces_and_revokes_the_previous_one(log: MemoryLog) -> None:
    (old_id, old), (new_id, new) = new_key(), new_key()
    await import_bootstrap_keys(log, settings(bootstrap_admin_key=old))

    [line] = await import_bootstrap_keys(log, settings(bootstrap_admin_key=new))

    assert f"previous one (id {old_id}) revoked" in line
    book = KeyBook(log)
    assert (await book.get(old_id)).active is False  # type: ignore[union-attr]
    assert (await book.get(new_id)).matches(new)  # type: ignore[union-attr]


async def test_a_revoked_key_is_never_imported_again(log: MemoryLog) -> None:
    key_id, key = new_key()
    await import_bootstrap_keys(log, settings(bootstrap_admin_key=key))
    await KeyBook(log).revoke(key_id)

    with pytest.raises(ConfigurationError, match="was revoked"):
        await import_bootstrap_keys(log, settings(bootstrap_admin_key=key))
    assert (await KeyBook(log).get(key_id)).active is False  # type: ignore[union-attr]


async def test_one_bad_key_stores_none_of_them(log: MemoryLog) -> None:
    _, good = new_key()
    wanted = settings(bootstrap_admin_key=good, bootstrap_dashboard_key=PLACEHOLDER)
    with pytest.raises(WeakKey, match="FQ_BOOTSTRAP_DASHBOARD_KEY"):
        await import_bootstrap_keys(log, wanted)
    assert await KeyBook(log).records() == []


def test_keys_come_from_files_too_but_not_from_both_places(tmp_path: Path) -> None:
    _, key = new_key()
    secret = tmp_path / "admin-key"
    secret.write_text(f"{key}\n")
    [found] = bootstrap_keys(settings(bootstrap_admin_key_file=secret))
    assert (found.name, found.key) == ("admin", key)
    with pytest.raises(ConfigurationError, match="not both"):
        bootstrap_keys(settings(bootstrap_admin_key_file=secret, bootstrap_admin_key=key))
    with pytest.raises(ConfigurationError, match="cannot read"):
        bootstrap_keys(settings(bootstrap_dashboard_key_file=tmp_path / "missing"))
    assert bootstrap_keys(settings()) == []


async def test_fq_up_makes_the_dashboard_a_read_only_key_in_var_dashboard_key(
    log: MemoryLog, tmp_path: Path
) -> None:
    path = tmp_path / "var" / "dashboard.key"
    made = await ensure_dashboard_key(log, path)

    assert made is not None and path.read_text().strip() == made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = await KeyBook(log).get(key_id_of(made) or "")
    assert record is not None and record.name == "dashboard"
    assert frozenset(record.scopes) == DASHBOARD_SCOPES == {Scope.JOBS_READ, Scope.OPS_READ}
    assert await ensure_dashboard_key(log, path) is None  # kept on the next fq up
    assert settings(var_dir=tmp_path / "var").dashboard_client_key() == made


def test_a_database_url_with_the_example_files_placeholder_password_is_refused() -> None:
    with pytest.raises(ValueError, match="CHANGE-ME placeholder"):
        settings(database_url="postgresql+psycopg://fq:CHANGE-ME@postgres:5432/fq")
    chosen = "postgresql+psycopg://fq:s3cret@postgres:5432/fq"
    assert settings(database_url=chosen).database_url == chosen
