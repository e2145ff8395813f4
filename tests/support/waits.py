"""Waiting on signals with a timeout, never on bare sleeps.

``collect_events`` listens on the event log itself (JetStream subjects), which is the signal
every component emits; ``wait_until`` re-checks a condition (an HTTP answer, a row count)
until it holds or the deadline passes, and then fails with what it last saw.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
from nats.aio.client import Client

from ferrisqueue.domain.subjects import EVENT_STREAM

T = TypeVar("T")


async def wait_until(
    check: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> T:
    """Call ``check`` until ``done(result)``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if done(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


async def collect_events(
    nc: Client, subject: str, *, until: Callable[[list[dict[str, Any]]], bool], timeout: float
) -> list[dict[str, Any]]:
    """Read the stored events on ``subject`` (from the start of the stream) until ``until``
    holds for the bodies collected so far; fail after ``timeout``."""
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    sub = await patiently(
        lambda: js.subscribe(subject, stream=EVENT_STREAM, ordered_consumer=True), deadline
    )
    bodies: list[dict[str, Any]] = []
    try:
        while not until(bodies):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {timeout}s on {subject}: {len(bodies)} events collected"
                )
            try:
                msg = await sub.next_msg(timeout=remaining)
            except TimeoutError:
                continue
            bodies.append(json.loads(msg.data) | {"_subject": msg.subject})
    finally:
        await sub.unsubscribe()
    return bodies


async def patiently(read: Callable[[], Awaitable[T]], deadline: float) -> T:
    """``read()``, asked again while JetStream does not answer (a cluster still electing
    after a fault) until ``deadline`` (monotonic), then the last error."""
    while True:
        try:
            return await read()
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)  # the cluster's recovery, bounded by the deadline


async def wait_for_readyz(
    client: Any,
    process: Any,
    output: Callable[[], str],
    *,
    timeout: float = 60.0,
    interval: float = 0.1,
) -> None:
    """Until the gateway behind ``client`` (an ``httpx.AsyncClient``) answers /readyz with
    200; fails at once, with ``output()``, if ``process`` (what serves it: ``fq up``) ended."""
    import httpx

    async def ready() -> int:
        assert process.poll() is None, output()
        try:
            return int((await client.get("/readyz")).status_code)
        except httpx.TransportError:
            return 0

    await wait_until(
        ready, lambda code: code == 200, timeout=timeout, what="ready", interval=interval
    )
