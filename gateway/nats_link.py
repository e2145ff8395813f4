"""The gateway's link to NATS, which may come and go without taking the gateway down.

If NATS is not reachable when the gateway starts, the gateway still serves reads from the
read store and answers writes with 503 while it keeps trying to connect in the background.
Once connected, nats-py reconnects by itself for ever (see :mod:`ferrisqueue.log.natsconn`).
"""

from __future__ import annotations

import asyncio
import logging

from ferrisqueue.domain.subjects import DLQ_STREAM, EVENT_STREAM, SCHEDULE_STREAM
from ferrisqueue.errors import NatsUnavailable
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.topology import prepare_streams
from ferrisqueue.runloop import reap
from ferrisqueue.settings import AuthMode, Settings
from gateway.auth import KeyCache
from gateway.idempotency import IdempotencyKeys

_USES = (EVENT_STREAM, DLQ_STREAM, SCHEDULE_STREAM, "KV_FQ_IDEMPOTENCY", "KV_FQ_CRON", "KV_FQ_KEYS")
"""The streams the gateway checks for at start when it may not create them."""

log = logging.getLogger(__name__)


class NatsLink:
    """Holds the :class:`EventLog` (which owns the connection) once there is one."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self.event_log: EventLog | None = None
        self.idempotency: IdempotencyKeys | None = None
        self.keys: KeyCache | None = None
        """The API keys (auth on only), once NATS was reached."""

    @property
    def connected(self) -> bool:
        return self.event_log is not None and self.event_log.connected

    async def start(self) -> None:
        """Connect now if possible, else keep trying in the background."""
        if not await self._try_connect():
            self._task = asyncio.create_task(self._keep_trying(), name="nats-connect")

    async def _try_connect(self) -> bool:
        try:
            event_log = await NatsLog.connect(self._settings, name="fq-gateway")
        except NatsUnavailable as exc:
            log.warning("%s; will retry", exc)
            return False
        await prepare_streams(event_log, self._settings, _USES)
        if self._settings.auth is AuthMode.ON:
            keys = KeyCache(event_log, refresh_seconds=self._settings.auth_refresh_seconds)
            await keys.start()
            self.keys = keys
        self.event_log = event_log
        self.idempotency = IdempotencyKeys(event_log)
        return True

    async def _keep_trying(self) -> None:
        while True:
            await asyncio.sleep(self._settings.retry_after_seconds)  # a backoff, not a sync
            if await self._try_connect():
                return

    async def close(self) -> None:
        if self._task is not None:
            await reap(self._task)
        if self.keys is not None:
            await self.keys.stop()
        if self.event_log is not None:
            await self.event_log.close()
