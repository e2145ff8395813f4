"""Connecting to NATS the way every long-running service must.

nats-py's defaults give up reconnecting after about two minutes; a service must not, so we
reconnect forever and log every disconnect. The server must be new enough for the JetStream
features FerrisQueue relies on (message schedules need 2.14).
"""

from __future__ import annotations

import logging
from typing import Any

from nats.aio.client import Client

from ferrisqueue.errors import ConfigurationError, NatsUnavailable

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = (2, 14)


async def connect(url: str, *, name: str, connect_timeout: float = 2.0) -> Client:
    """Connect to ``url`` (comma-separated servers) and check the server version.

    Raises :class:`NatsUnavailable` when no server answers and :class:`ConfigurationError`
    when the server is too old.
    """

    async def on_error(exc: Exception) -> None:
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
