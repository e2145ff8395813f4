"""``python -m scheduler``: the dead-letter router, the timer relay and cron, until SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from ferrisqueue import runloop
from ferrisqueue.eventlog import EventLog
from ferrisqueue.logs import setup_logging
from ferrisqueue.natsconn import close_quietly, connect
from ferrisqueue.settings import Settings
from ferrisqueue.topology import ensure_streams
from scheduler.cron import run_cron
from scheduler.dead_letters import DeadLetterRouter
from scheduler.timers import TimerRelay


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
        event_log = EventLog.for_settings(nc, settings)
        # One task each until stopping; if one fails the others are canceled and we exit.
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(DeadLetterRouter(nc, event_log).run(stopping))
            tasks.create_task(TimerRelay(nc, event_log).run(stopping))
            tasks.create_task(run_cron(nc, event_log, settings, stopping))
    finally:
        await close_quietly(nc)


def main() -> None:
    settings = Settings()
    setup_logging("scheduler", settings.log_level)
    runloop.run(_serve(settings))


if __name__ == "__main__":
    main()
