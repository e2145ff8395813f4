"""The NATS users of ``fq up``'s embedded server: generated once, kept under ``var/``.

At its first start ``fq up`` makes a password for every role of :mod:`ferrisqueue.log.roles`
and writes them to ``var/nats-users.json`` (mode 0600, the folder's other files stay as they
are), printing once where they are and how to use the ``nats`` CLI with them. Later starts
reuse the file (adding a user for a queue that is new). The server reads the passwords from
its environment (``$NATS_PASSWORD_<USER>`` in its config), so no config file holds one;
each child gets its own role's user and password in its environment, and the ``fq`` CLI
uses the ``admin`` user from the file when no NATS identity is configured.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from ferrisqueue.errors import ConfigurationError
from ferrisqueue.log.roles import (
    ADMIN,
    OPERATOR,
    PRODUCER,
    Role,
    inbox_prefix_for,
    new_password,
    roles,
)
from ferrisqueue.settings import Settings

USERS_FILE = "nats-users.json"


@dataclass(frozen=True)
class NatsUsers:
    """The generated passwords, by user, and the roles they belong to."""

    path: Path
    passwords: dict[str, str]
    roles: list[Role]
    created: bool
    """Whether this start made the file (so the passwords are shown once)."""

    def server_env(self) -> dict[str, str]:
        """What the server's config reads: ``NATS_PASSWORD_<USER>`` for every role."""
        return {role.password_env: self.passwords[role.user] for role in self.roles}

    def child_env(self, user: str) -> dict[str, str]:
        """A child's environment for acting as ``user``."""
        return {"FQ_NATS_USER": user, "FQ_NATS_PASSWORD": self.passwords[user]}

    def as_admin(self, settings: Settings) -> Settings:
        """``settings`` acting as the ``admin`` user (``fq up`` applies the topology so)."""
        update = {"nats_user": ADMIN, "nats_password": SecretStr(self.passwords[ADMIN])}
        return settings.model_copy(update=update)

    def announcement(self, nats_url: str) -> str:
        """Printed once, when the users were made."""
        password = self.passwords[OPERATOR]
        return (
            f"NATS users created in {self.path} (mode 0600; shown once). Inspect streams "
            f"read-only with: nats --server {nats_url} --user {OPERATOR} --password {password} "
            f"--inbox-prefix {inbox_prefix_for(OPERATOR)} stream ls  "
            f"(submit jobs with plain nats as `{PRODUCER}`; the `{ADMIN}` user in that file may "
            f"change anything: the fq CLI uses it)."
        )


def users_path(settings: Settings) -> Path:
    return settings.var_dir / USERS_FILE


def ensure_users(settings: Settings) -> NatsUsers:
    """Load ``var/nats-users.json``, or make it; a user missing from it (a new queue) is
    added. The file is written with mode 0600 from the start (never readable by others)."""
    path = users_path(settings)
    all_roles = roles(
        settings.worker_queues,
        projector_consumer=settings.projector_consumer,
        projector_partitions=settings.projector_partitions,
    )
    stored = _read(path) if path.exists() else {}
    wanted = {role.user: stored.get(role.user) or new_password() for role in all_roles}
    if wanted != stored:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({**stored, **wanted}, f, indent=2)
        os.replace(path.with_suffix(".tmp"), path)
    os.chmod(path, 0o600)
    return NatsUsers(path, wanted, all_roles, created=not stored)


def with_admin_identity(settings: Settings) -> Settings:
    """The ``fq`` CLI's settings: with no NATS identity configured and the embedded server
    (no ``FQ_NATS_URL``), act as ``admin`` from ``var/nats-users.json`` when ``fq up`` made
    it; otherwise the settings as they are."""
    path = users_path(settings)
    if settings.nats_authenticated or settings.nats_url is not None or not path.exists():
        return settings
    password = _read(path).get(ADMIN)
    if not password:
        return settings
    return settings.model_copy(update={"nats_user": ADMIN, "nats_password": SecretStr(password)})


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path}: {exc}; remove it to make new NATS users") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigurationError(f"{path}: not a JSON object of passwords")
    return data
