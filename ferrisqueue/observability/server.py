"""The metrics port of a worker, the projector or the scheduler: ``GET /metrics`` and
``GET /healthz`` on ``FQ_METRICS_HOST``:``FQ_METRICS_PORT``.

A tiny HTTP/1.1 server on the service's own event loop (``asyncio.start_server``): one
request per connection, no keep-alive, nothing but those two paths. On the event loop
rather than in prometheus_client's server thread so that the health check reads the
service's state without locks; a scrape renders in well under a millisecond.

``/healthz`` answers 200 with ``ok`` when the service's ``health`` callable returns no
problem, else 503 with the problem (a worker whose queue loops are down or whose NATS
connection is closed): what a Kubernetes liveness or readiness probe reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from prometheus_client import CollectorRegistry

from ferrisqueue.observability.registry import CONTENT_TYPE, exposition
from ferrisqueue.settings import Settings

log = logging.getLogger(__name__)

Health = Callable[[], str | None]
"""The service's health: None when it is healthy, else what is wrong (one line)."""

READ_LIMIT = 8192
"""Bytes of request line and headers read before the request is refused."""
READ_TIMEOUT = 5.0
"""Seconds a client may take to send its request."""


class MetricsServer:
    """Serves ``registry`` at ``/metrics`` and ``health`` at ``/healthz``."""

    def __init__(self, registry: CollectorRegistry, health: Health) -> None:
        self._registry = registry
        self._health = health

    @contextlib.asynccontextmanager
    async def serving(self, host: str, port: int) -> AsyncIterator[asyncio.Server]:
        """Listen on ``host``:``port`` while the block runs (port 0: a free one, read it
        from the yielded server's sockets)."""
        server = await asyncio.start_server(self._answer, host, port, limit=READ_LIMIT)
        bound = server.sockets[0].getsockname()
        log.info("metrics on http://%s:%d/metrics", bound[0], bound[1])
        try:
            yield server
        finally:
            server.close()
            await server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                request = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = self.respond(request.split(b"\r\n", 1)[0])
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            log.debug("metrics request dropped: %r", exc)
        except ConnectionError:
            pass  # the scraper went away
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def respond(self, request_line: bytes) -> tuple[str, str, bytes]:
        """Status, content type and body for one request line (``GET /metrics HTTP/1.1``)."""
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3 or parts[0] != "GET":
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        path = parts[1].split("?", 1)[0]
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE, exposition(self._registry)
        if path == "/healthz":
            problem = self._health()
            if problem is None:
                return "200 OK", "text/plain", b"ok\n"
            return "503 Service Unavailable", "text/plain", f"{problem}\n".encode()
        return "404 Not Found", "text/plain", b"not found: try /metrics or /healthz\n"


@contextlib.asynccontextmanager
async def metrics_port(
    registry: CollectorRegistry, health: Health, settings: Settings
) -> AsyncIterator[None]:
    """Serve ``registry`` and ``health`` on ``FQ_METRICS_HOST``:``FQ_METRICS_PORT`` while
    the block runs; nothing without a port or with ``FQ_METRICS_ENABLED=false``."""
    if not settings.metrics_served or settings.metrics_port is None:
        yield
        return
    async with MetricsServer(registry, health).serving(
        settings.metrics_host, settings.metrics_port
    ):
        yield
