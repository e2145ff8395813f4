"""Enqueue throughput: how fast ``submitted`` events get into the log, acknowledged, through
each path a producer has. No worker and no projector run: this is the write path alone.

* ``nats append``: ``EventLog.append`` (one awaited publish per job), ``concurrency`` at once;
* ``nats publish_async``: a bounded ``publish_async`` pipeline, every ack awaited at the end;
* ``http single``: ``POST /jobs`` on the real uvicorn gateway, keep-alive, ``concurrency`` at once
  (sent by :mod:`bench.httpload`, which costs far less CPU than the gateway it measures);
* ``http batch``: ``POST /jobs:batch`` with ``batch`` jobs per request, 4 requests at once.

Each path stops after ``jobs`` jobs or ``seconds``, whichever comes first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import probes
from bench.harness import Proc, connected, cpu_seconds, system
from bench.httpload import HttpLoad
from ferrisqueue.log.natslog import NatsLog

HTTP_BATCH = 100
BATCH_CONCURRENCY = 4


async def run(
    jobs: int, *, concurrency: int = 64, http_concurrency: int = 32, seconds: float = 10.0
) -> list[dict[str, Any]]:
    results = []
    with system() as sys_:
        await sys_.topology()
        async with connected(sys_) as nc:
            event_log = NatsLog(nc)

            async def append() -> int:
                await event_log.append(probes.submitted())
                return 1

            results.append(
                await _closed_loop("nats append", append, jobs, concurrency, seconds)
                | {"concurrency": concurrency}
            )
            took = await probes.publish_pipeline(nc, jobs)
            results.append(
                {
                    "path": "nats publish_async",
                    "jobs": jobs,
                    "seconds": round(took, 3),
                    "jobs_per_s": round(jobs / took, 1),
                    "in_flight": 1000,
                }
            )
        gateway = await sys_.start_gateway()
        async with HttpLoad(sys_.gateway_url, connections=http_concurrency) as http:

            async def post_one() -> int:
                (await http.post("/jobs", {"type": probes.TASK})).expect(202)
                return 1

            body = {"jobs": [{"type": probes.TASK}] * HTTP_BATCH}

            async def post_batch() -> int:
                (await http.post("/jobs:batch", body)).expect(202)
                return HTTP_BATCH

            results.append(
                await _with_cpu(
                    gateway,
                    _closed_loop("http single", post_one, jobs, http_concurrency, seconds),
                )
                | {"concurrency": http_concurrency}
            )
            results.append(
                await _with_cpu(
                    gateway,
                    _closed_loop("http batch", post_batch, jobs, BATCH_CONCURRENCY, seconds),
                )
                | {"concurrency": BATCH_CONCURRENCY, "batch": HTTP_BATCH}
            )
    return results


async def _with_cpu(gateway: Proc, measured: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """The result, with the CPU the gateway and this client spent per job: which of the two
    bounds the HTTP figures (one Python client process sends the requests)."""
    gateway_before, client_before = cpu_seconds(gateway.pid), time.process_time()
    result = await measured
    gateway_after, client_after = cpu_seconds(gateway.pid), time.process_time()
    jobs = result["jobs"] or 1
    if gateway_before is not None and gateway_after is not None:
        result["gateway_cpu_us_per_job"] = round((gateway_after - gateway_before) / jobs * 1e6, 1)
    result["client_cpu_us_per_job"] = round((client_after - client_before) / jobs * 1e6, 1)
    return result


async def _closed_loop(
    path: str, one: Callable[[], Awaitable[int]], jobs: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    """``concurrency`` loops calling ``one`` until ``jobs`` are in or ``seconds`` are over."""
    done = 0
    began = time.perf_counter()
    deadline = began + seconds

    async def loop() -> None:
        nonlocal done
        while done < jobs and time.perf_counter() < deadline:
            got = await one()  # not `done += await one()`: that reads `done` before the await
            done += got

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    took = time.perf_counter() - began
    return {
        "path": path,
        "jobs": done,
        "seconds": round(took, 3),
        "jobs_per_s": round(done / took, 1),
    }
