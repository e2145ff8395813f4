"""The gateway's Prometheus metrics and its ``GET /metrics`` (the text format).

``fq_http_requests_total{route,method,status}``
    Requests answered, by route *template* (``/jobs/{job_id}/status``, never the raw path:
    job ids would make a series per job), method and status code. A path no route matches
    is counted under ``route="unmatched"``.
``fq_http_request_duration_seconds{route,method}`` (histogram)
    From the request reaching the app to its response's last byte handed to the server.
``fq_http_requests_shed_total{route,reason}``
    Submissions (``/jobs``, ``/jobs:batch``) refused with ``503`` by admission control
    (:mod:`gateway.admission`): ``reason="inflight"`` past ``FQ_GATEWAY_MAX_INFLIGHT``,
    ``"queue_wait"`` past ``FQ_GATEWAY_MAX_QUEUE_WAIT``. They are answered before this
    middleware sees them, so they are not in ``fq_http_requests_total``.

Jobs submitted through the API show as ``fq_http_requests_total{route="/jobs",
method="POST",status="201"}`` (and ``/jobs:batch``); the system-wide count of submitted jobs,
raw ``nats pub`` producers included, is the projector's ``fq_jobs_submitted_total``
(:mod:`projections.observe`). Process metrics come with the registry.

A pure ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``, which costs a task
and a stream per request.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ferrisqueue.observability.registry import (
    CONTENT_TYPE,
    DURATION_BUCKETS,
    exposition,
    new_registry,
)

UNMATCHED = "unmatched"
"""The ``route`` label of a request no route matched."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods counted by name; any other is ``OTHER``, so that a scanner cannot add series."""


class RequestMetrics:
    """ASGI middleware counting and timing every HTTP request into ``registry``."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "fq_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "fq_http_request_duration_seconds",
            "HTTP request latency, by route template and method.",
            ["route", "method"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        """Each label set's counter and histogram (a label lookup costs more than the
        increment); bounded like the labels: routes x methods x statuses."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the server answers if the app raises before it responds

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The router stored the matched route in the scope it was handed (this one).
            route: Any = scope.get("route")
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            labels = (getattr(route, "path", None) or UNMATCHED, method, status)
            children = self._children.get(labels)
            if children is None:
                children = self._children[labels] = (
                    self.requests.labels(*labels[:2], str(status)),
                    self.latency.labels(*labels[:2]),
                )
            children[0].inc()
            children[1].observe(time.perf_counter() - began)


def shed_counter(registry: CollectorRegistry) -> Counter:
    """``fq_http_requests_shed_total{route,reason}``, in ``registry``."""
    return Counter(
        "fq_http_requests_shed",
        "Submissions refused with 503 by admission control, by route and reason "
        "(inflight: FQ_GATEWAY_MAX_INFLIGHT, queue_wait: FQ_GATEWAY_MAX_QUEUE_WAIT).",
        ["route", "reason"],
        registry=registry,
    )


def instrument(app: FastAPI) -> CollectorRegistry:
    """Count ``app``'s requests and serve ``GET /metrics``; returns the registry."""
    registry = new_registry()
    app.add_middleware(RequestMetrics, registry=registry)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics of this gateway process, in the text exposition format."""
        return Response(exposition(registry), media_type=CONTENT_TYPE)

    return registry
