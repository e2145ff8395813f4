"""API keys in tests: the admin key `fq up` wrote, and keys made straight in the key store."""

from __future__ import annotations

from pathlib import Path

from ferrisqueue.domain.principal import Scope
from ferrisqueue.log.keybook import KeyBook
from ferrisqueue.log.port import LogPort


def admin_headers(var_dir: Path | str) -> dict[str, str]:
    """``Authorization: Bearer <the key in var_dir/admin.key>``."""
    key = (Path(var_dir) / "admin.key").read_text().strip()
    return {"Authorization": f"Bearer {key}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def make_key(
    log: LogPort, name: str, *scopes: Scope, rate: float | None = None, burst: int | None = None
) -> str:
    """A new key in the store holding ``scopes``; returns the key."""
    _, key = await KeyBook(log).create(name, frozenset(scopes), rate=rate, burst=burst)
    return key
