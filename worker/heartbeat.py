"""The worker's own heartbeat (not the job lease): "I am alive, this busy, this productive".

Published to ``FQ_WORKERS`` every ``FQ_WORKER_HEARTBEAT`` seconds and once more, as
``stopped``, on a clean stop. A lost heartbeat is only logged: the dashboard will show the
worker stale, which is the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from ferrisqueue.domain.events import utcnow
from ferrisqueue.domain.workers import WORKER_STREAM, Heartbeat
from ferrisqueue.log.port import LogPort
from ferrisqueue.settings import Settings

log = logging.getLogger(__name__)


class HeartbeatPublisher:
    """Publishes this worker's :class:`Heartbeat` from counters it reads on each beat."""

    def __init__(
        self, log: LogPort, settings: Settings, counters: Callable[[], tuple[int, int, int]]
    ) -> None:
        self._log = log
        self._settings = settings
        self._counters = counters  # (in_flight, processed, failed)
        self._started_at: datetime = utcnow()

    async def run(self, stopping: asyncio.Event) -> None:
        """Beat until ``stopping`` is set."""
        while not stopping.is_set():
            await self.beat("heartbeat")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._settings.worker_heartbeat)

    async def beat(self, kind: Literal["heartbeat", "stopped"]) -> None:
        in_flight, processed, failed = self._counters()
        heartbeat = Heartbeat(
            kind=kind,
            worker_id=self._settings.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self._settings.worker_queues,
            concurrency=self._settings.worker_concurrency,
            in_flight=in_flight,
            processed=processed,
            failed=failed,
            started_at=self._started_at,
            at=utcnow(),
            interval=self._settings.worker_heartbeat,
        )
        try:
            await self._log.publish(
                heartbeat.subject,
                heartbeat.model_dump_json().encode(),
                stream=WORKER_STREAM,
                headers={},
            )
        except Exception as exc:  # the jobs matter more than the heartbeat: log and go on
            log.warning("heartbeat not published: %s", exc)
