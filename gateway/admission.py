"""Admission control: under overload the gateway refuses submissions at once instead of
queueing them for seconds.

Each ``POST /jobs`` and ``POST /jobs:batch`` holds the event loop's time and a JetStream
acknowledgement; past what the process can serve, more of them in flight only makes every
one of them wait longer (at 1,000 submissions/s on two shared cores, submit -> start was
1.1 s at the median and 5 s at p99, nothing refused). :class:`Admission` counts the
submissions in flight and answers one that would go past ``FQ_GATEWAY_MAX_INFLIGHT`` with
``503``, ``Retry-After`` and the gateway's error body (``{"detail": ...}``) before anything
else runs: no body read, no validation, no id given, nothing appended. The job was not
created and the client may send it again (with an ``Idempotency-Key`` a retry can never
create a second job, whatever happened to the first try).

Only submissions are shed: reads, cancels, dead-letter actions and health checks are few,
cheap or what an operator needs most while the gateway is overloaded (``/readyz``,
``/metrics``). uvicorn's ``FQ_GATEWAY_LIMIT_CONCURRENCY`` still bounds everything
(connections plus requests) far above this.

A pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs a task and a stream per
request), outermost among the gateway's own, so a refusal costs next to nothing.
"""

from __future__ import annotations

import asyncio
import json

from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.limits import HEAD_AT

SUBMIT_PATHS = frozenset({"/jobs", "/jobs:batch"})
"""The paths whose ``POST`` is a submission, the only requests admission control sheds."""

INFLIGHT = "inflight"
"""Reason of a refusal: ``FQ_GATEWAY_MAX_INFLIGHT`` submissions were in flight."""
QUEUE_WAIT = "queue_wait"
"""Reason of a refusal: the request waited longer than ``FQ_GATEWAY_MAX_QUEUE_WAIT`` for the
app to start it (the event loop is behind: the process has less CPU than its load needs)."""


def app_path(scope: Scope) -> str:
    """The request's path as the app's routes see it: without the ``root_path`` the server
    puts in front of it (uvicorn ``--root-path``, a proxy's prefix)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class Admission:
    """ASGI middleware admitting a submission only while fewer than ``max_inflight`` are in
    flight (0: no limit) and, with ``max_wait`` (seconds), only if it reached the app within
    ``max_wait`` of its head being read (:data:`~gateway.limits.HEAD_AT`: time spent queued
    in the event loop behind other work); any other gets ``503`` with ``Retry-After:
    retry_after`` at once. ``shed`` counts refusals per path and reason."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_inflight: int,
        max_wait: float | None,
        retry_after: int,
        shed: Counter | None = None,
    ) -> None:
        if max_inflight < 0 or (max_wait is not None and max_wait <= 0):
            raise ValueError("max_inflight must be >= 0 and max_wait > 0 (None: no limit)")
        self.app = app
        self.max_inflight = max_inflight or None
        self.max_wait = max_wait
        self.inflight = 0
        """Submissions admitted and not answered yet (one event loop: no lock needed)."""
        self._refusals = {
            INFLIGHT: _answer(
                f"the gateway is overloaded: {max_inflight} submissions are in flight "
                "(FQ_GATEWAY_MAX_INFLIGHT); the job was not created, retry later",
                retry_after,
            ),
            QUEUE_WAIT: _answer(
                f"the gateway is overloaded: the submission waited more than "
                f"{1000 * (max_wait or 0):g} ms to be started (FQ_GATEWAY_MAX_QUEUE_WAIT); "
                "the job was not created, retry later",
                retry_after,
            ),
        }
        self._shed = (
            {(p, r): shed.labels(p, r) for p in SUBMIT_PATHS for r in (INFLIGHT, QUEUE_WAIT)}
            if shed
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or (path := app_path(scope)) not in SUBMIT_PATHS
        ):
            await self.app(scope, receive, send)
            return
        if self.max_inflight is not None and self.inflight >= self.max_inflight:
            await self._refuse(path, INFLIGHT, send)
            return
        if (
            self.max_wait is not None
            and (arrived := scope.get(HEAD_AT)) is not None
            and asyncio.get_running_loop().time() - arrived > self.max_wait
        ):
            await self._refuse(path, QUEUE_WAIT, send)
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1

    async def _refuse(self, path: str, reason: str, send: Send) -> None:
        if self._shed is not None:
            self._shed[path, reason].inc()
        start, body = self._refusals[reason]
        await send(start)
        await send(body)


def _answer(detail: str, retry_after: int) -> tuple[Message, Message]:
    """The two messages of a ``503`` with ``detail`` in the gateway's error body."""
    body = json.dumps({"detail": detail}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}
