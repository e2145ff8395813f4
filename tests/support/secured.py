"""A nats-server with FerrisQueue's NATS roles (the rendered ``authorization`` block), and
clients that connect as one of them and record what the server refuses."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client

from ferrisqueue.log.embedded import EmbeddedNats, free_port
from ferrisqueue.log.natsconn import NatsAccess
from ferrisqueue.log.roles import Role, new_password, render_authorization, roles

QUEUES = ("default", "other")


@dataclass
class SecuredNats:
    """The server, its roles and their passwords (made up per test)."""

    server: EmbeddedNats
    roles: list[Role]
    passwords: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def access(self, user: str) -> NatsAccess:
        role = next(r for r in self.roles if r.user == user)
        return NatsAccess(user=user, password=self.passwords[user], inbox_prefix=role.inbox_prefix)

    def env(self, user: str) -> dict[str, str]:
        """A service's environment for acting as ``user``."""
        return {"FQ_NATS_USER": user, "FQ_NATS_PASSWORD": self.passwords[user]}

    async def client(self, user: str | None) -> Watched:
        """A connection as ``user`` (None: anonymous) that records the server's errors."""
        watched = Watched()
        options = self.access(user).options() if user else {}
        watched.nc = await nats.connect(
            self.url,
            error_cb=watched.record,
            allow_reconnect=False,
            connect_timeout=2,
            **options,
        )
        return watched

    def violations(self) -> list[str]:
        """The permission violations the server logged ("Publish Violation", "Subscription
        Violation")."""
        log = self.server.log_path.read_text(errors="replace")
        return [line for line in log.splitlines() if " Violation - " in line]


@dataclass
class Watched:
    """A client and the errors its server sent it (a refused publish or subscription
    arrives as an asynchronous ``-ERR``)."""

    nc: Client = field(init=False)
    errors: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    async def record(self, exc: Exception) -> None:
        await self.errors.put(str(exc))

    async def refused(self, what: str, *, timeout: float = 5.0) -> str:
        """Wait for the server's refusal naming ``what``; fail if none comes in time."""
        while True:
            error = await asyncio.wait_for(self.errors.get(), timeout)
            # nats-py lowercases the server's message.
            if "permissions violation" in error.lower() and what.lower() in error.lower():
                return error


def start_secured(data_dir: Path, queues: tuple[str, ...] = QUEUES, extra: str = "") -> SecuredNats:
    """A server with every role of ``queues`` (passwords given in its environment)."""
    all_roles = roles(queues)
    passwords = {r.user: new_password() for r in all_roles}
    server = EmbeddedNats(
        data_dir,
        free_port(),
        extra_config=render_authorization(all_roles) + extra,
        env={r.password_env: passwords[r.user] for r in all_roles},
    )
    server.start()
    return SecuredNats(server, all_roles, passwords)
