"""``python -m worker``: run one worker process until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal

from ferrisqueue import runloop
from ferrisqueue.logs import setup_logging
from ferrisqueue.settings import Settings
from worker.runner import Worker
from worker.tasks import default_registry


async def _serve(settings: Settings) -> None:
    worker = Worker(settings, default_registry(settings))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.run()


def main() -> None:
    settings = Settings()
    setup_logging(f"worker[{settings.worker_id}]", settings.log_level)
    runloop.run(_serve(settings))


if __name__ == "__main__":
    main()
