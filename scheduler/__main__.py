"""``python -m scheduler``: the dead-letter router and sweeper, the timer relay and cron,
until SIGTERM.

Four loops of one shape (:class:`ferrisqueue.log.service_loop.ConsumerLoop`), each with its
own durable consumer. Each handles its own failures and never raises, so a bad advisory or a
NATS hiccup in one of them leaves the others running.
"""

from __future__ import annotations

import asyncio
import signal

from ferrisqueue import runloop
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.topology import ensure_streams
from ferrisqueue.logs import setup_logging
from ferrisqueue.settings import Settings
from ferrisqueue.tracing import Tracing, tracing_from_env
from scheduler.cron import TickRelay
from scheduler.dead_letter_sweeper import DeadLetterSweeper
from scheduler.dead_letters import DeadLetterRouter
from scheduler.timers import TimerRelay


async def _serve(settings: Settings, tracing: Tracing) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    event_log = await NatsLog.connect(settings, name="fq-scheduler")
    try:
        await ensure_streams(event_log, settings)
        loops = (
            DeadLetterRouter(event_log),
            DeadLetterSweeper(event_log),
            TimerRelay(event_log, tracing=tracing),
            # a broken cron file stops us here
            TickRelay.for_settings(event_log, settings, tracing=tracing),
        )
        # A loop's run() returns only once stopping is set and it has drained: the group
        # waits for all of them; no loop's failure reaches it to cancel the others.
        async with asyncio.TaskGroup() as tasks:
            for service_loop in loops:
                tasks.create_task(service_loop.run(stopping), name=service_loop.name)
    finally:
        await event_log.close()


def main() -> None:
    settings = Settings()
    setup_logging("scheduler", settings.log_level, settings.log_format)
    tracing = tracing_from_env("ferrisqueue-scheduler")
    try:
        runloop.run(_serve(settings, tracing))
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    main()
