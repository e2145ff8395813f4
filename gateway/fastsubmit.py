"""The fast path of ``POST /jobs``: the common submission answered without FastAPI's
request machinery, which cost more CPU than everything else the request does.

Profiled under load (``python -m bench --only enqueue``), a ``POST /jobs`` spent most of its
gateway CPU in the framework: resolving eight dependencies (query parameters parsed for
each), matching the route through the included routers, finding the status URL by walking
every route, validating the answer again before encoding it. :class:`FastSubmit` answers a
submission itself when it is the common case, with the route's own steps
(:func:`gateway.submit.new_job`, :func:`gateway.submit.store_job`, :func:`principal_of`,
:func:`charge_submissions`), so the two cannot drift apart:

- anything out of the ordinary before a side effect (no JSON content type, a body that
  does not parse or validate, a refused job, an unknown parent, a missing, unknown or
  under-scoped key, NATS not reached yet, several ``Idempotency-Key`` headers, a body
  limit hit) hands the request, body replayed, to the FastAPI route, which answers it as
  it always did (its 422s, 401s, 413s are FastAPI's, byte for byte);
- once the submission is charged to the caller's rate limit, claimed or appended, it is
  answered here: ``202`` with the route's body and headers, or the app's own exception
  handler for what the log, the key store or the rate limit raised (503, 413, 422, 429);
  anything else propagates as from the route (500).

Not installed when tracing is on: FastAPI then makes the request span and names it after
the route, which the route keeps doing. ``GET`` and every other route are untouched.
"""

from __future__ import annotations

import inspect
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ferrisqueue.domain.principal import Scope as KeyScope
from ferrisqueue.domain.states import JobStatus
from ferrisqueue.errors import FerrisQueueError
from gateway.admission import app_path
from gateway.deps import (
    ANONYMOUS,
    ANONYMOUS_ACTOR,
    BEARER,
    charge_submissions,
    event_log_of,
    get_idempotency_keys,
    principal_of,
)
from gateway.idempotency import MAX_KEY_LENGTH
from gateway.schemas import JobAccepted, JobCreate
from gateway.submit import new_job, run_at_of, status_url, store_job

PATH = "/jobs"


@dataclass(frozen=True, slots=True)
class _Route:
    path: str
    name: str


SUBMIT_ROUTE = _Route(PATH, "submit_job")
"""What the scope names as its route (``scope["route"]``) when this middleware answered:
the route template and endpoint name the request metrics (and logs) read."""

_Handler = Callable[[Request, Any], Response | Awaitable[Response]]


class FastSubmit:
    """ASGI middleware answering the common ``POST /jobs`` itself (see the module)."""

    def __init__(self, app: ASGIApp, *, gateway: FastAPI) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or app_path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        content_type, keys = _headers_of(scope)
        if content_type != "application/json" or len(keys) > 1:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
        except HTTPException as exc:  # a body limit: the route raises it where FastAPI answers
            await self.app(scope, _replay(messages, receive, exc), send)
            return
        if not await self._submit(scope, messages, keys, receive, send):
            await self.app(scope, _replay(messages, receive), send)

    async def _submit(
        self, scope: Scope, messages: list[Message], keys: list[str], receive: Receive, send: Send
    ) -> bool:
        """Answer the submission and say True, or say False having done nothing."""
        if messages[-1]["type"] != "http.request":
            return False  # the client left: the route sees it as it would have
        idempotency_key = keys[0] if keys else None
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_KEY_LENGTH:
            return False
        try:
            raw = json.loads(b"".join(m.get("body", b"") for m in messages))
            body = JobCreate.model_validate(raw)
        except (ValueError, ValidationError):  # JSONDecodeError and UnicodeError are too
            return False
        request = Request(scope, receive)
        state = request.app.state
        try:
            principal = await principal_of(request, await BEARER(request), KeyScope.JOBS_WRITE)
            event_log = event_log_of(request)
            keys_store = await get_idempotency_keys(request)
            actor = ANONYMOUS_ACTOR if principal is ANONYMOUS else principal.actor
            event = await new_job(body, state.job_types, event_log, actor)
        except (HTTPException, RequestValidationError, FerrisQueueError):
            return False
        # From here the request has effects: it is answered here, whatever happens.
        scope["route"] = SUBMIT_ROUTE  # the request metrics' route label, as the router's
        try:
            job, replayed = await store_job(
                event,
                body,
                event_log=event_log,
                keys=keys_store,
                tracing=state.tracing,
                idempotency_key=idempotency_key,
                charge=lambda: charge_submissions(request, principal, 1),
                headers=Headers(scope=scope),
            )
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = handler(request, exc)  # the gateway's are all async
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return True
        url = status_url(request, job.job_id)
        answer = JobAccepted(
            job_id=job.job_id,
            queue=body.queue if replayed else job.queue,
            status=JobStatus.PENDING,
            run_at=run_at_of(job),
            status_url=url,
        ).model_dump_json()
        content = answer.encode()
        headers = [
            (b"content-length", str(len(content)).encode()),
            (b"content-type", b"application/json"),
            (b"location", url.encode()),
        ]
        if replayed is not None:
            headers.append((b"idempotent-replayed", b"true" if replayed else b"false"))
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": content})
        return True

    def _handler(self, exc: Exception) -> _Handler | None:
        """The app's exception handler for ``exc``, as Starlette picks it (by its class's
        MRO), or None."""
        handlers = self.gateway.exception_handlers
        for kind in type(exc).__mro__:
            if kind in handlers:
                handler: _Handler = handlers[kind]
                return handler
        return None


def _headers_of(scope: Scope) -> tuple[str | None, list[str]]:
    """The request's media type (lower case, no parameters) and its ``Idempotency-Key``
    values, in one pass over the headers."""
    content_type: str | None = None
    keys: list[str] = []
    for name, value in scope["headers"]:
        if name == b"content-type" and content_type is None:  # the first, as FastAPI reads
            content_type = value.decode("latin-1").partition(";")[0].strip().lower()
        elif name == b"idempotency-key":
            keys.append(value.decode("latin-1"))
    return content_type, keys


def _replay(messages: list[Message], receive: Receive, error: Exception | None = None) -> Receive:
    """``receive`` with ``messages`` (already read) first, then ``error`` if there is one."""
    pending = deque(messages)

    async def replayed() -> Message:
        if pending:
            return pending.popleft()
        if error is not None:
            raise error
        return await receive()

    return replayed
