"""Connecting to NATS the way every long-running service must.

nats-py's defaults give up reconnecting after about two minutes; a service must not, so we
reconnect forever and log every disconnect. The server must be new enough for the JetStream
features FerrisQueue relies on (message schedules need 2.14).

Who connects is :class:`NatsAccess`: a role's user and password (or a ``.creds`` file), its own
inbox prefix, and TLS when a CA is configured (docs/security.md, "NATS roles").
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from ferrisqueue.errors import ConfigurationError, NatsUnavailable
from ferrisqueue.log.roles import inbox_prefix_for
from ferrisqueue.settings import Settings, check_nats_password

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = (2, 14)


@dataclass(frozen=True)
class NatsAccess:
    """How a process identifies itself to NATS, and whether it speaks TLS. The default is
    anonymous and plaintext (a server without users: the tests', a bare local one)."""

    user: str | None = None
    password: str | None = None
    creds: Path | None = None
    inbox_prefix: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> NatsAccess:
        """The settings' identity, with the password read from its file if one is named.
        An empty password (or file) is refused: a secret left unset must not pass."""
        password = settings.nats_password.get_secret_value() if settings.nats_password else None
        if settings.nats_password_file is not None:
            try:
                password = settings.nats_password_file.read_text().strip()
            except OSError as exc:
                raise ConfigurationError(f"FQ_NATS_PASSWORD_FILE: {exc}") from exc
            try:
                check_nats_password(
                    password, f"FQ_NATS_PASSWORD_FILE {settings.nats_password_file}"
                )
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from exc
        prefix = settings.nats_inbox_prefix
        if prefix is None and settings.nats_user is not None:
            prefix = inbox_prefix_for(settings.nats_user)
        return cls(
            user=settings.nats_user,
            password=password,
            creds=settings.nats_creds,
            inbox_prefix=prefix,
            tls_ca=settings.nats_tls_ca,
            tls_cert=settings.nats_tls_cert,
            tls_key=settings.nats_tls_key,
        )

    def options(self) -> dict[str, Any]:
        """nats-py ``connect()`` keyword arguments for this identity."""
        options: dict[str, Any] = {}
        if self.user is not None:
            options.update(user=self.user, password=self.password)
        if self.creds is not None:
            options["user_credentials"] = str(self.creds)
        if self.inbox_prefix is not None:
            options["inbox_prefix"] = self.inbox_prefix
        if self.tls_ca is not None:
            options["tls"] = self.tls_context()
        return options

    def tls_context(self) -> ssl.SSLContext:
        """A client context verifying the server against ``tls_ca`` (and presenting a client
        certificate when one is configured)."""
        assert self.tls_ca is not None
        try:
            context = ssl.create_default_context(cafile=str(self.tls_ca))
            if self.tls_cert is not None and self.tls_key is not None:
                context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"FQ_NATS_TLS_*: {exc}") from exc
        return context


ANONYMOUS = NatsAccess()


async def connect(
    url: str, *, name: str, connect_timeout: float = 2.0, access: NatsAccess = ANONYMOUS
) -> Client:
    """Connect to ``url`` (comma-separated servers) as ``access`` says and check the server
    version.

    Raises :class:`NatsUnavailable` when no server answers and :class:`ConfigurationError`
    when the server is too old.
    """

    async def on_error(exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            # The request behind it only times out; say why, once, loudly.
            log.error(
                "nats (%s): %s: the NATS user %s may not do this (docs/security.md, NATS roles)",
                name,
                exc,
                access.user or "(anonymous)",
            )
            return
        log.warning("nats (%s): %s", name, exc)

    async def on_disconnect() -> None:
        if not nc.is_closed:
            log.warning("nats (%s): disconnected; reconnecting", name)

    async def on_reconnect() -> None:
        log.info("nats (%s): reconnected", name)

    options: dict[str, Any] = {
        "servers": [u.strip() for u in url.split(",") if u.strip()],
        "name": name,
        "connect_timeout": connect_timeout,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "allow_reconnect": True,
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
        **access.options(),
    }
    nc = Client()
    try:
        await nc.connect(**options)
    except Exception as exc:  # nats-py raises a zoo of errors here (OSError, NoServersError, ...)
        raise NatsUnavailable(f"cannot connect to NATS at {url}: {exc}") from exc
    version = nc.connected_server_version
    if (version.major, version.minor) < MIN_SERVER_VERSION:
        await nc.close()
        wanted = ".".join(map(str, MIN_SERVER_VERSION))
        raise ConfigurationError(
            f"nats-server at {url} is {version}; FerrisQueue needs {wanted} or newer "
            "(unset FQ_NATS_URL to use the embedded server)"
        )
    return nc


async def connect_as(settings: Settings, *, name: str, url: str | None = None) -> Client:
    """:func:`connect` to ``url`` (default ``FQ_NATS_URL``) with the settings' identity."""
    return await connect(
        url or settings.effective_nats_url,
        name=name,
        connect_timeout=settings.nats_connect_timeout,
        access=NatsAccess.from_settings(settings),
    )


async def close_quietly(nc: Client, *, flush_seconds: int = 2) -> None:
    """Flush what is buffered (acks, publishes) and close, without hanging on a dead server.

    ``drain()`` is not used: with pull subscriptions it can wait for ever.
    """
    if nc.is_closed:
        return
    try:
        if nc.is_connected:
            await nc.flush(timeout=max(1, int(flush_seconds)))
    except Exception as exc:  # closing anyway; a failed flush leaves messages to redelivery
        log.debug("flush before close failed: %s", exc)
    await nc.close()
