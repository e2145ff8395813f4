"""``python -m scheduler``: the dead-letter router and sweeper, the timer relay, cron and
the dependency gate, until SIGTERM.

Five loops of one shape (:class:`ferrisqueue.log.service_loop.ConsumerLoop`), each with its
own durable consumer. Each handles its own failures and never raises, so a bad advisory or a
NATS hiccup in one of them leaves the others running. With ``FQ_METRICS_PORT`` it also
samples the queues' depth (:mod:`scheduler.depth`) and serves ``/metrics`` and ``/healthz``.
"""

from __future__ import annotations

import asyncio
import signal

from ferrisqueue import runloop
from ferrisqueue.domain.subjects import (
    ADVISORY_STREAM,
    DLQ_STREAM,
    EVENT_STREAM,
    SCHEDULE_STREAM,
)
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.service_loop import ServiceLoop
from ferrisqueue.log.topology import prepare_streams
from ferrisqueue.logs import setup_logging
from ferrisqueue.observability.registry import new_registry
from ferrisqueue.observability.server import metrics_port
from ferrisqueue.settings import Settings
from ferrisqueue.tracing import Tracing, tracing_from_env
from scheduler.cron import TickRelay
from scheduler.dead_letter_sweeper import DeadLetterSweeper
from scheduler.dead_letters import DeadLetterRouter
from scheduler.dependencies import DependencyGate
from scheduler.depth import QueueDepth
from scheduler.timers import TimerRelay

_USES = (EVENT_STREAM, DLQ_STREAM, SCHEDULE_STREAM, ADVISORY_STREAM, "KV_FQ_CRON")
"""The streams the scheduler checks for at start when it may not create them."""


async def _serve(settings: Settings, tracing: Tracing) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    registry = new_registry()
    running = _Running()
    async with metrics_port(registry, running.health, settings):
        event_log = await NatsLog.connect(settings, name="fq-scheduler")
        try:
            await prepare_streams(event_log, settings, _USES)
            loops = running.loops = (
                DeadLetterRouter(event_log),
                DeadLetterSweeper(event_log),
                TimerRelay(event_log, tracing=tracing),
                # a broken cron file stops us here
                TickRelay.for_settings(event_log, settings, tracing=tracing),
                DependencyGate(event_log),
            )
            running.event_log = event_log
            # A loop's run() returns only once stopping is set and it has drained: the group
            # waits for all of them; no loop's failure reaches it to cancel the others.
            async with asyncio.TaskGroup() as tasks:
                for service_loop in loops:
                    tasks.create_task(service_loop.run(stopping), name=service_loop.name)
                if settings.metrics_served:
                    tasks.create_task(QueueDepth(registry).run(event_log, stopping), name="depth")
        finally:
            await event_log.close()


class _Running:
    """What the scheduler's ``/healthz`` reads: its loops and its log, once started."""

    def __init__(self) -> None:
        self.event_log: NatsLog | None = None
        self.loops: tuple[ServiceLoop, ...] = ()

    def health(self) -> str | None:
        if self.event_log is None:
            return "starting"
        if not self.event_log.connected:
            return "the NATS connection is closed"
        down = [loop.name for loop in self.loops if not loop.up]
        return f"not running: {', '.join(down)}" if down else None


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
