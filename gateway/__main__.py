"""``python -m gateway``: serve the gateway with uvicorn on the configured host and port."""

from __future__ import annotations

import uvicorn

from ferrisqueue.logs import setup_logging
from ferrisqueue.settings import Settings
from gateway.app import create_app


def main() -> None:
    settings = Settings()
    setup_logging("gateway", settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="info",
        access_log=False,
    )


if __name__ == "__main__":
    main()
