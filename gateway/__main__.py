"""``python -m gateway``: serve the gateway with uvicorn on the configured host and port."""

from __future__ import annotations

import uvicorn

from ferrisqueue.logs import LogFormat, setup_logging
from ferrisqueue.settings import Settings
from ferrisqueue.tracing import tracing_from_env
from gateway.app import create_app
from gateway.limits import bounded_http_protocol


def main() -> None:
    settings = Settings()
    setup_logging("gateway", settings.log_level, settings.log_format)
    tracing = tracing_from_env("ferrisqueue-gateway")
    try:
        uvicorn.run(
            create_app(settings, tracing=tracing),
            host=settings.gateway_host,
            port=settings.gateway_port,
            log_level="info",
            access_log=settings.gateway_access_log,
            # Hostile input (gateway/limits.py, docs/security.md): a capped request head,
            # idle connections closed, and a bound on what is in flight at once.
            http=bounded_http_protocol(settings.gateway_header_timeout),
            h11_max_incomplete_event_size=settings.gateway_max_header_bytes,
            timeout_keep_alive=settings.gateway_keep_alive_timeout,
            limit_concurrency=settings.gateway_limit_concurrency or None,
            # JSON: uvicorn's records (its access log too) go through our handler, in our
            # format; text keeps uvicorn's own.
            log_config=None
            if settings.log_format is LogFormat.JSON
            else uvicorn.config.LOGGING_CONFIG,
        )
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    main()
