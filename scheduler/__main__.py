"""``python -m scheduler``: run the scheduler (today: the dead-letter router) until SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from ferrisqueue.eventlog import EventLog
from ferrisqueue.logs import setup_logging
from ferrisqueue.natsconn import close_quietly, connect
from ferrisqueue.settings import Settings
from ferrisqueue.topology import ensure_streams
from scheduler.dead_letters import DeadLetterRouter


async def _serve(settings: Settings) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    nc = await connect(
        settings.effective_nats_url,
        name="fq-scheduler",
        connect_timeout=settings.nats_connect_timeout,
    )
    try:
        await ensure_streams(nc, settings)
        await DeadLetterRouter(nc, EventLog.for_settings(nc, settings)).run(stopping)
    finally:
        await close_quietly(nc)


def main() -> None:
    settings = Settings()
    setup_logging("scheduler", settings.log_level)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
