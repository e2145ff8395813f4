"""What one HTTP client can make the gateway hold: a request head, a body, the time to send it.

uvicorn bounds neither the head (with httptools, its fast parser, it buffers a header of any
size) nor the time a body takes to arrive. So:

- :class:`BoundedHeadHttpTools` is uvicorn's httptools protocol with a cap on the bytes of a
  request line plus headers (uvicorn's own ``h11_max_incomplete_event_size``, set from
  ``FQ_GATEWAY_MAX_HEADER_BYTES``, which the h11 protocol already honours): past it, the
  client gets ``431`` and the connection is closed before the parser buffers the read that
  crosses the cap. A head that takes longer than ``FQ_GATEWAY_HEADER_TIMEOUT`` (or a
  connection that sends nothing that long) gets ``408`` and is closed: slowloris.
- :class:`BodyLimits` is an ASGI middleware that refuses a body larger than
  ``FQ_GATEWAY_MAX_BODY_BYTES`` with ``413`` and gives a whole body
  ``FQ_GATEWAY_BODY_TIMEOUT`` seconds to arrive (``408``), both with ``Connection: close``.

docs/security.md ("Hostile input") lists every limit.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_AT = "fq.head_at"
"""Scope key: the event loop's time when the request's head had been read (set by
:class:`BoundedHeadHttpTools`; absent under another server or protocol)."""

_TOO_LARGE = b"request line and headers too large"
_TOO_SLOW = b"request line and headers too slow"
_CLOSE = {"Connection": "close"}


class BoundedHeadHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head larger than
    ``config.h11_max_incomplete_event_size`` bytes with ``431`` and a closed connection.

    The head's bytes are counted as they arrive, before the parser buffers them: a read
    counts up to the blank line that ends the head, or whole if it has none. After the head,
    nothing is counted until the request is complete; the start of a pipelined head in the
    same read as the end of the previous request goes uncounted (one read at most)."""

    head_timeout: float | None = None
    """Seconds a connection may take to send a request head (from its first byte, or from
    connecting); a slower one gets ``408`` and is closed. None: no limit."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._max_head = self.config.h11_max_incomplete_event_size
        self._head_bytes = 0
        self._in_head = True
        self._tail = b""
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._in_head and self._max_head is not None:
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(end + 4 - len(self._tail), 0)
            self._tail = seen[-3:]  # a blank line split across two reads is still seen
            if self._head_bytes > self._max_head:
                self._refuse_head()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._tail = False, 0, b""
        self._stop_head_timer()
        # When the request arrived, as this process saw it: admission control sheds a
        # submission that waited too long after it for the app to start it.
        self.scope[HEAD_AT] = self.loop.time()  # type: ignore[literal-required]
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True

    def _start_head_timer(self) -> None:
        if self.head_timeout is not None and self._head_timer is None:
            loop = asyncio.get_running_loop()
            self._head_timer = loop.call_later(self.head_timeout, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._answer_and_close(b"408 Request Timeout", _TOO_SLOW)

    def _refuse_head(self) -> None:
        self._stop_head_timer()
        self._answer_and_close(b"431 Request Header Fields Too Large", _TOO_LARGE)

    def _answer_and_close(self, status: bytes, text: bytes) -> None:
        self.transport.write(
            b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, len(text), text)
        )
        self.transport.close()


def bounded_http_protocol(head_timeout: float | None) -> type[BoundedHeadHttpTools]:
    """:class:`BoundedHeadHttpTools` with ``head_timeout`` (uvicorn builds the protocol
    itself, from a class, so the setting travels on the class)."""
    return type("BoundedHttpTools", (BoundedHeadHttpTools,), {"head_timeout": head_timeout})


class BodyLimits:
    """ASGI middleware bounding a request's body: at most ``max_bytes`` (``413``, at once when
    the Content-Length says so, else as soon as the bytes so far do) and all of it within
    ``timeout`` seconds of the request reaching the app (``408``). Both are raised where the
    body is read, so the app answers them as any HTTP error (JSON ``{"detail": ...}``), with
    ``Connection: close``: the rest of the body is never read. Waiting for a disconnect after
    the body is not bounded: that is the server's business, not the client's."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        declared = _content_length(scope)
        received = 0
        body_done = False

        async def bounded_receive() -> Message:
            nonlocal body_done, received
            if body_done:
                return await receive()
            if declared is not None and declared > self.max_bytes:
                raise self._too_large()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"the request body did not arrive within {self.timeout:g} s",
                    headers=_CLOSE,
                ) from None
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self._too_large()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, bounded_receive, send)

    def _too_large(self) -> HTTPException:
        return HTTPException(
            413, f"the request body is larger than {self.max_bytes} bytes", headers=_CLOSE
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed one before we see it
    return None
