"""``python -m worker``: run one worker process until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from ferrisqueue import runloop
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.logs import LogFormat, setup_logging
from ferrisqueue.observability.registry import new_registry
from ferrisqueue.observability.server import metrics_port
from ferrisqueue.settings import Settings
from ferrisqueue.tracing import Tracing, tracing_from_env
from worker.logfields import AttemptLogFields
from worker.metrics import WorkerMetrics, watch_queues
from worker.middleware import Middleware, load_middleware
from worker.runner import Worker
from worker.tasks import default_registry
from worker.tracing import TraceAttempts

log = logging.getLogger("worker")


def observability(settings: Settings, tracing: Tracing) -> list[Middleware]:
    """The worker's own middleware, outermost: the attempt's span (when tracing is on), then
    its log fields (which take the span's trace id; only JSON logs show them). Each is left
    out when it would show nothing: a middleware costs every attempt its hooks."""
    middleware: list[Middleware] = [TraceAttempts(tracing)] if tracing.enabled else []
    if settings.log_format is LogFormat.JSON:
        middleware.append(AttemptLogFields(tracing))
    return middleware


async def _serve(settings: Settings, tracing: Tracing) -> None:
    registry = new_registry()
    # Metrics outermost, so that they count every attempt, also those a plugin refuses.
    measured: list[Middleware] = (
        [WorkerMetrics(registry, settings)] if settings.metrics_served else []
    )
    middleware = [*measured, *observability(settings, tracing), *load_middleware(settings)]
    worker = Worker(settings, default_registry(settings), middleware)
    if settings.metrics_served:
        watch_queues(registry, worker, settings.worker_queues)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    async with metrics_port(registry, worker.health, settings):
        await worker.run()


def main() -> None:
    settings = Settings()
    setup_logging(f"worker[{settings.worker_id}]", settings.log_level, settings.log_format)
    if settings.worker_niceness and hasattr(os, "nice"):
        # Jobs are the work that can wait: on a shared machine the broker and the read side
        # come first, else four workers on two cores leave the projector seconds behind.
        os.nice(settings.worker_niceness)
    try:
        tracing = tracing_from_env("ferrisqueue-worker")
        try:
            runloop.run(_serve(settings, tracing))
        finally:
            tracing.shutdown()
    except ConfigurationError as exc:
        # A plugin's invalid settings, a resource that cannot be opened, an unknown
        # OTEL_TRACES_EXPORTER: say what, without a traceback, and exit non-zero so a
        # supervisor does not report a clean stop.
        log.error("worker not started: %s", exc)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
