"""The admin key of ``fq up``: generated once, kept in ``var/admin.key`` (mode 0600).

``fq up`` runs the gateway with auth on. So that the quick start still takes two commands,
it makes an API key holding every scope, named ``admin``, writes it to ``var/admin.key``
(a fixed path: the README's curl examples, the ``fq`` CLI and the dashboard read it there)
and prints it once. On later runs the file's key is reused; its record is stored again if
the key store lost it (a fresh NATS). A revoked admin key is replaced by a new one on the
next ``fq up``: that is how the local admin key is rotated.

The dashboard gets a key of its own the same way, ``var/dashboard.key``, holding only the
read scopes it needs (:data:`DASHBOARD_SCOPES`): it reads the gateway with that key, never
with the operator's.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ferrisqueue.domain.apikeys import key_id_of, new_key
from ferrisqueue.domain.principal import ALL_SCOPES, Scope
from ferrisqueue.log.keybook import KeyBook, KeyNotFound
from ferrisqueue.log.port import LogPort

ADMIN_KEY_NAME = "admin"
DASHBOARD_KEY_NAME = "dashboard"
DASHBOARD_SCOPES: frozenset[Scope] = frozenset({Scope.JOBS_READ, Scope.OPS_READ})
"""What the dashboard reads: jobs, queues, dead letters (``jobs:read``), workers,
throughput, projections (``ops:read``); nothing it could change anything with."""


async def ensure_admin_key(log: LogPort, path: Path) -> str | None:
    """Make sure ``path`` holds an active admin key of the key store; returns the key when
    it was just made (to print once), else None."""
    return await ensure_key_file(log, path, ADMIN_KEY_NAME, ALL_SCOPES)


async def ensure_dashboard_key(log: LogPort, path: Path) -> str | None:
    """Make sure ``path`` holds an active ``dashboard`` key (read scopes only); the key
    when it was just made, else None."""
    return await ensure_key_file(log, path, DASHBOARD_KEY_NAME, DASHBOARD_SCOPES)


async def ensure_key_file(
    log: LogPort, path: Path, name: str, scopes: frozenset[Scope]
) -> str | None:
    """Make sure ``path`` holds an active key named ``name`` of the key store; returns the
    key when it was just made, else None."""
    book = KeyBook(log)
    key = _read(path)
    key_id = key_id_of(key) if key else None
    if key is not None and key_id is not None:
        record = await book.get(key_id)
        if record is not None and record.active:
            return None
        if record is None:  # the store lost it (a new NATS): store the same key again
            await _retire_others(book, name)
            await book.create(name, scopes, key=key)
            return None
    # No file, an unreadable one, or a revoked key: a new key.
    _, key = new_key()
    _write_private(path, key)
    await _retire_others(book, name)
    await book.create(name, scopes, key=key)
    return key


async def _retire_others(book: KeyBook, name: str) -> None:
    """Revoke an active key of this name whose file is gone: nobody can present it any more."""
    with contextlib.suppress(KeyNotFound):
        await book.revoke(name)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _write_private(path: Path, key: str) -> None:
    """Write ``key`` to ``path`` readable by its owner only (0600 from creation, then an
    atomic rename, so no moment exists where another user could read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{key}\n".encode())
    finally:
        os.close(fd)
    os.chmod(temporary, 0o600)  # a umask cannot widen it, but an existing file kept its mode
    os.replace(temporary, path)
