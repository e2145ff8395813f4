"""Keeping a job leased while its handler runs.

AckWait is the lease (the visibility timeout): a job whose worker neither acks nor
heartbeats within AckWait is delivered again, to any worker. ``in_progress()`` restarts the
full AckWait, so heartbeating every AckWait/3 keeps a long job leased through two lost
heartbeats. A worker that dies stops heartbeating, and its job comes back after AckWait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from nats.aio.msg import Msg

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def leased(msg: Msg, ack_wait: float) -> AsyncIterator[None]:
    """Heartbeat ``msg`` every ``ack_wait / 3`` seconds for as long as the block runs."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(ack_wait / 3)
            try:
                await msg.in_progress()
            except Exception as exc:  # a lost heartbeat is survivable; the next one may land
                log.warning("heartbeat for %s failed: %s", msg.subject, exc)

    task = asyncio.create_task(beat(), name=f"lease:{msg.subject}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
