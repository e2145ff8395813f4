"""``python -m projections``: run the projector until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal

from ferrisqueue.logs import setup_logging
from ferrisqueue.settings import Settings
from projections.runner import Projector


async def _serve(settings: Settings) -> None:
    projector = Projector(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, projector.stop)
    await projector.run()


def main() -> None:
    settings = Settings()
    setup_logging("projector", settings.log_level)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
