"""A small HTTP/1.1 client for generating load on the gateway: keep-alive connections, one
request at a time on each.

The benchmark used httpx, which spent 2.3-2.8 ms of CPU per ``POST /jobs`` here, three times
what the gateway spent answering it: the HTTP rows measured the client, and 1,000 requests/s
would have needed more than the machine's two cores. This client writes the request in one
piece and reads the answer by its ``Content-Length``, which is all uvicorn's answers to the
benchmark need; anything else is an error, never a guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

_END_OF_HEAD = b"\r\n\r\n"
_CONTENT_LENGTH = b"\r\ncontent-length:"


class HttpLoadError(Exception):
    """An answer this client does not read (no ``Content-Length``, a broken status line)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def expect(self, status: int) -> Answer:
        """This answer if it has ``status``, else an error naming what came instead."""
        if self.status != status:
            raise HttpLoadError(f"expected {status}, got {self.status}: {self.body[:200]!r}")
        return self


class HttpLoad:
    """Up to ``connections`` keep-alive connections to ``base_url`` (``http://host:port``);
    a request not answered within ``timeout`` seconds raises ``TimeoutError``."""

    def __init__(self, base_url: str, *, connections: int, timeout: float = 30.0) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None or url.port is None:
            raise ValueError(f"need http://host:port, got {base_url!r}")
        self._host, self._port = url.hostname, url.port
        self._slots = asyncio.Semaphore(connections)
        self._timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def __aenter__(self) -> HttpLoad:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
        for _, writer in idle:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def post(self, path: str, payload: Any) -> Answer:
        """``POST path`` with ``payload`` as JSON; returns the status and body."""
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        async with self._slots:
            if self._idle:
                reader, writer = self._idle.pop()
            else:
                reader, writer = await asyncio.open_connection(self._host, self._port)
            try:
                async with asyncio.timeout(self._timeout):
                    writer.write(head + body)
                    answer_head = await reader.readuntil(_END_OF_HEAD)
                    answer = Answer(
                        _status(answer_head), await reader.readexactly(_length(answer_head))
                    )
            except BaseException:
                writer.close()  # half a conversation: the connection cannot be reused
                raise
            self._idle.append((reader, writer))
            return answer


def _status(head: bytes) -> int:
    # "HTTP/1.1 202 Accepted"
    if not head.startswith(b"HTTP/1.1 ") or not head[9:12].isdigit():
        raise HttpLoadError(f"not an HTTP/1.1 status line: {head[:40]!r}")
    return int(head[9:12])


def _length(head: bytes) -> int:
    at = head.lower().find(_CONTENT_LENGTH)
    if at < 0:
        raise HttpLoadError("an answer without Content-Length")
    value = head[at + len(_CONTENT_LENGTH) : head.index(b"\r\n", at + 2)]
    return int(value.strip())
