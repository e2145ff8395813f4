"""What fsync-before-ack costs: the same measurements on the default fsync policy and on
``sync_interval: always`` (nats/server/single.conf against single-sync-always.conf), one
after the other in one run, so the two profiles share the machine's mood.

For each profile, on a fresh system:

* submit latency: ``EventLog.append`` one at a time (``sequential`` appends), the time from
  the call to JetStream's ack, p50/p99 — what one client submitting alone waits;
* submit throughput: ``concurrency`` appends at once until ``jobs`` are in or ``seconds``
  are over, with each append's latency (p50/p99) under that load;
* processing: ``jobs`` no-op jobs, 2 workers, the projector running (:mod:`processing`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import probes
from bench.harness import connected, percentile, system
from bench.scenarios import processing
from ferrisqueue.log.natslog import NatsLog

log = logging.getLogger(__name__)

PROFILES = (("default fsync", False), ("sync_interval: always", True))


async def run(
    jobs: int,
    *,
    concurrency: int,
    workers: int = 2,
    sequential: int = 500,
    in_flight: int = 64,
    seconds: float = 10.0,
) -> list[dict[str, Any]]:
    results = []
    for name, sync_always in PROFILES:
        log.info("durability: %s", name)
        with system(sync_always=sync_always) as sys_:
            await sys_.topology()
            async with connected(sys_) as nc:
                append = _timed_append(NatsLog(nc))
                alone = [await append() for _ in range(sequential)]
                loaded, took = await _closed_loop(append, jobs, in_flight, seconds)
        work = await processing.run(jobs, workers, concurrency=concurrency, sync_always=sync_always)
        results.append(
            {
                "profile": name,
                "sync_always": sync_always,
                "alone_ms": _ms(alone),
                "appends": len(loaded),
                "in_flight": in_flight,
                "appends_per_s": round(len(loaded) / took, 1),
                "loaded_ms": _ms(loaded),
                "processing": work,
            }
        )
    return results


def _timed_append(event_log: NatsLog) -> Callable[[], Awaitable[float]]:
    """One acknowledged ``submitted`` append per call; returns its seconds."""

    async def append() -> float:
        began = time.perf_counter()
        await event_log.append(probes.submitted())
        return time.perf_counter() - began

    return append


async def _closed_loop(
    one: Callable[[], Awaitable[float]], jobs: int, concurrency: int, seconds: float
) -> tuple[list[float], float]:
    """``concurrency`` loops calling ``one`` until ``jobs`` calls or ``seconds``; every call's
    latency and the seconds it all took."""
    latencies: list[float] = []
    began = time.perf_counter()
    deadline = began + seconds

    async def loop() -> None:
        while len(latencies) < jobs and time.perf_counter() < deadline:
            latencies.append(await one())

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return latencies, time.perf_counter() - began


def _ms(latencies: list[float]) -> dict[str, float | None]:
    return {
        f"p{q}": round(v * 1000, 2) if (v := percentile(latencies, q)) is not None else None
        for q in (50, 99)
    }
