"""A deployment's first API keys: ``fq init`` imports keys its operator made.

A deployment (the Kubernetes ``fq-init`` Job, compose's ``init``) has no human to run
``fq keys create`` and copy a key out of its output. Instead the operator makes the keys
beforehand (``fq keys generate``), puts them in the deployment's secrets, and ``fq init``
stores them, as hashes like any key, under fixed names:

============= ============================= ==========================================
name          from                          scopes
============= ============================= ==========================================
``admin``     ``FQ_BOOTSTRAP_ADMIN_KEY``    every scope (the operator's first key)
``dashboard`` ``FQ_BOOTSTRAP_DASHBOARD_KEY`` ``jobs:read``, ``ops:read`` (what it shows)
============= ============================= ==========================================

(each also from a file: ``FQ_BOOTSTRAP_*_KEY_FILE``). Re-running with the same key changes
nothing. A different key under the same name replaces the previous one, which is revoked:
that is how these keys are rotated (change the secret, run ``fq init`` again). A revoked key
is never brought back, and a malformed, placeholder or weak key is refused before anything
is stored (:func:`~ferrisqueue.domain.apikeys.checked_key`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from ferrisqueue.cli.adminkey import ADMIN_KEY_NAME, DASHBOARD_KEY_NAME, DASHBOARD_SCOPES
from ferrisqueue.domain.apikeys import checked_key, hash_key, key_id_of
from ferrisqueue.domain.principal import ALL_SCOPES, Scope
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.log.keybook import KeyBook, KeyNotFound
from ferrisqueue.log.port import LogPort
from ferrisqueue.settings import Settings


@dataclass(frozen=True)
class BootstrapKey:
    """One key to import: its name, scopes, and the key (already checked)."""

    name: str
    scopes: frozenset[Scope]
    key: str


def bootstrap_keys(settings: Settings) -> list[BootstrapKey]:
    """The keys ``settings`` asks ``fq init`` to import, each checked; :class:`WeakKey`
    (a :class:`ConfigurationError`) names the first bad one."""
    wanted = [
        (
            ADMIN_KEY_NAME,
            ALL_SCOPES,
            "FQ_BOOTSTRAP_ADMIN_KEY",
            settings.bootstrap_admin_key,
            settings.bootstrap_admin_key_file,
        ),
        (
            DASHBOARD_KEY_NAME,
            DASHBOARD_SCOPES,
            "FQ_BOOTSTRAP_DASHBOARD_KEY",
            settings.bootstrap_dashboard_key,
            settings.bootstrap_dashboard_key_file,
        ),
    ]
    found = []
    for name, scopes, variable, value, path in wanted:
        key = _value_or_file(variable, value, path)
        if key is not None:
            found.append(BootstrapKey(name, scopes, checked_key(key, what=variable)))
    return found


def _value_or_file(variable: str, value: SecretStr | None, path: Path | None) -> str | None:
    if value is not None and path is not None:
        raise ConfigurationError(f"set {variable} or {variable}_FILE, not both")
    if value is not None:
        return value.get_secret_value()
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"{variable}_FILE: cannot read {path}: {exc}") from exc


async def import_key(log: LogPort, wanted: BootstrapKey) -> str:
    """Store ``wanted`` unless it is there already; a line saying what was done."""
    book = KeyBook(log)
    key_id = key_id_of(wanted.key)
    assert key_id is not None  # checked_key made sure
    record = await book.get(key_id)
    if record is not None:
        if record.hash != hash_key(wanted.key):
            raise ConfigurationError(
                f"key {wanted.name}: the key store already holds another key with id {key_id}; "
                "generate a new key"
            )
        if not record.active:
            raise ConfigurationError(
                f"key {wanted.name} (id {key_id}) was revoked at "
                f"{record.revoked_at:%Y-%m-%d %H:%M} UTC and is never accepted again; "
                "generate a new key"
            )
        return f"key {wanted.name} (id {key_id}) already stored"
    replaced = None
    with contextlib.suppress(KeyNotFound):  # rotation: the previous key of this name goes
        replaced = await book.revoke(wanted.name)
    await book.create(wanted.name, wanted.scopes, key=wanted.key)
    scopes = ",".join(sorted(s.value for s in wanted.scopes))
    done = f"key {wanted.name} (id {key_id}, {scopes}) imported"
    return done if replaced is None else f"{done}; the previous one (id {replaced.id}) revoked"


async def import_bootstrap_keys(log: LogPort, settings: Settings) -> list[str]:
    """Import every key ``settings`` names (all checked before any is stored); a line per
    key saying what was done."""
    wanted = bootstrap_keys(settings)
    return [await import_key(log, key) for key in wanted]
