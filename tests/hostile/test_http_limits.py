"""The gateway's limits on what one client can make it hold (gateway/limits.py), on a real
uvicorn gateway started with small limits: a head too large or too slow, a body too large or
too slow, an idle kept-alive connection. Each is refused and its connection closed within
the bound; requests inside the limits still work."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from ferrisqueue.settings import Settings
from tests.conftest import StartService, ready_gateway
from tests.hostile.conftest import auth_headers
from tests.support.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MAX_HEADER = 4096
MAX_BODY = 64 * 1024
BODY_TIMEOUT = 1.5
HEADER_TIMEOUT = 1.5
KEEP_ALIVE = 1

LIMITS = {
    "FQ_GATEWAY_MAX_HEADER_BYTES": str(MAX_HEADER),
    "FQ_GATEWAY_MAX_BODY_BYTES": str(MAX_BODY),
    "FQ_GATEWAY_BODY_TIMEOUT": str(BODY_TIMEOUT),
    "FQ_GATEWAY_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "FQ_GATEWAY_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE),
}


@pytest.fixture
async def limited(
    start: StartService, settings: Settings, api_key: str | None
) -> AsyncIterator[httpx.AsyncClient]:
    process = start("gateway", **LIMITS)
    async with httpx.AsyncClient(
        base_url=str(settings.gateway_url), timeout=10, headers=auth_headers(api_key)
    ) as client:
        await ready_gateway(process, client)
        yield client


async def raw_exchange(
    client: httpx.AsyncClient, head: bytes, *, pace: float | None = None, body: bytes = b""
) -> tuple[bytes, float]:
    """Send ``head`` then ``body`` on a fresh connection (``body`` one byte per ``pace``
    seconds when given, until the server answers); everything read until the server closes
    the connection, and the seconds from the end of the head to that close."""
    url = client.base_url
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(head)
        await writer.drain()
        sent_head = time.monotonic()
        for byte in body if pace is not None else []:
            writer.write(bytes([byte]))
            await writer.drain()
            try:  # the pace of the attack; an answer ends it at once
                answer = await asyncio.wait_for(reader.read(1), timeout=pace)
            except TimeoutError:
                continue
            rest = await asyncio.wait_for(reader.read(), timeout=10)
            return answer + rest, time.monotonic() - sent_head
        if pace is None and body:
            writer.write(body)
        everything = await asyncio.wait_for(reader.read(), timeout=10)  # to EOF: closed
        return everything, time.monotonic() - sent_head
    finally:
        writer.close()


def request_head(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: fq", *headers, "", ""]
    return "\r\n".join(lines).encode()


async def test_a_head_larger_than_the_limit_gets_431_and_a_closed_connection(
    limited: httpx.AsyncClient,
) -> None:
    big = "X-Big: " + "a" * (2 * MAX_HEADER)

    answer, _ = await raw_exchange(limited, request_head("/healthz", big))

    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    # A head just inside the limit is served.
    fits = {"X-Fits": "a" * (MAX_HEADER // 2)}
    assert (await limited.get("/healthz", headers=fits)).status_code == 200


async def test_a_head_sent_slower_than_the_limit_is_cut_off_with_408(
    limited: httpx.AsyncClient,
) -> None:
    # The request line, then a header one byte at a time, never finished.
    answer, took = await raw_exchange(
        limited, b"GET /healthz HTTP/1.1\r\n", pace=0.2, body=b"X-Slow: " + b"a" * 200
    )

    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert took < HEADER_TIMEOUT + 3


async def test_a_body_larger_than_the_limit_gets_413(limited: httpx.AsyncClient) -> None:
    too_big = b'{"type": "echo", "payload": {"x": "' + b"a" * MAX_BODY + b'"}}'

    declared = await limited.post("/jobs", content=too_big)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for start in range(0, len(too_big), 8192):
            yield too_big[start : start + 8192]

    streamed = await limited.post("/jobs", content=chunks())

    assert declared.status_code == 413, declared.text
    assert streamed.status_code == 413, streamed.text
    assert declared.json() == {"detail": f"the request body is larger than {MAX_BODY} bytes"}


async def test_a_body_inside_the_limits_larger_than_a_head_is_served(
    limited: httpx.AsyncClient,
) -> None:
    # Regression: the head and a large body in one read once counted as a large head (431).
    body = {"type": "echo", "payload": {"x": "a" * (MAX_BODY // 2)}}

    answer = await limited.post("/jobs", json=body)

    assert answer.status_code == 202, answer.text


async def test_a_body_sent_slower_than_the_limit_is_cut_off_with_408(
    limited: httpx.AsyncClient,
) -> None:
    body = b'{"type": "echo", "payload": {"x": "' + b"a" * 200 + b'"}}'
    head = request_head(
        "/jobs",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        method="POST",
    )

    answer, took = await raw_exchange(limited, head, pace=0.2, body=body)

    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"connection: close" in answer.lower()
    assert BODY_TIMEOUT - 0.5 < took < BODY_TIMEOUT + 3


async def test_an_idle_kept_alive_connection_is_closed(limited: httpx.AsyncClient) -> None:
    answer, took = await raw_exchange(limited, request_head("/healthz"))

    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    assert took < KEEP_ALIVE + 3


async def test_past_the_concurrency_limit_new_requests_get_503_until_connections_go(
    start: StartService, settings: Settings, api_key: str | None
) -> None:
    process = start("gateway", **LIMITS, FQ_GATEWAY_LIMIT_CONCURRENCY="4")
    url = httpx.URL(str(settings.gateway_url))
    async with httpx.AsyncClient(base_url=url, timeout=10, headers=auth_headers(api_key)) as client:
        await ready_gateway(process, client)
        # Four connections that send half a head and wait (each closed by the head timeout
        # at the latest).
        held = [await asyncio.open_connection(url.host, url.port) for _ in range(4)]
        for _, writer in held:
            writer.write(b"GET /healthz HTTP/1.1\r\n")

        async def status() -> int:
            async with httpx.AsyncClient(base_url=url, timeout=10) as fresh:
                return (await fresh.get("/healthz")).status_code

        refused = await wait_until(status, lambda s: s == 503, timeout=10, what="a 503")
        for _, writer in held:
            writer.close()
        served = await wait_until(status, lambda s: s == 200, timeout=10, what="a 200 again")

    assert (refused, served) == (503, 200)
