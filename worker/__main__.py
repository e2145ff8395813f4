"""``python -m worker``: run one worker process until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from ferrisqueue import runloop
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.logs import setup_logging
from ferrisqueue.settings import Settings
from worker.middleware import load_middleware
from worker.runner import Worker
from worker.tasks import default_registry

log = logging.getLogger("worker")


async def _serve(settings: Settings) -> None:
    worker = Worker(settings, default_registry(settings), load_middleware(settings))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.run()


def main() -> None:
    settings = Settings()
    setup_logging(f"worker[{settings.worker_id}]", settings.log_level)
    try:
        runloop.run(_serve(settings))
    except ConfigurationError as exc:
        # A plugin's invalid settings or a resource that cannot be opened: say what, without
        # a traceback, and exit non-zero so a supervisor does not report a clean stop.
        log.error("worker not started: %s", exc)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
