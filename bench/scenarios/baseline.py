"""The raw JetStream baseline, on the same server build and machine as the rest of the run:

* ``publish_async``: N messages the size of a ``submitted`` event into a file stream
  (``BENCH_RAW``, no dedup header), at most 1,000 awaiting their ack, every ack awaited;
* pull ``fetch`` + ``ack``: the same N messages consumed by 1 and by 2 processes sharing one
  durable consumer (explicit acks), from the first message to the last ack;
* a job's messages: the same again, each message handled as a FerrisQueue job is (a guarded
  ``started`` and an outcome, acknowledged, into a second file stream, then the ack) with
  nats-py's ``publish_async`` (each ack awaited) and no FerrisQueue code, 16 at a time (a
  worker's default slots): about the most workers could do here if their own code and the
  projection cost nothing.

What FerrisQueue does on top (events, guards, dedup, a fold per job) is what the ratios show.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from asyncio.subprocess import PIPE
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from bench import probes
from bench.harness import REPO, connected, cpu_seconds, system
from ferrisqueue.domain.events import encode_event

STREAM = "BENCH_RAW"
SUBJECT = "bench.raw"
FETCH_BATCH = 256
EVENTS_STREAM = "BENCH_RAW_EVENTS"
EVENTS_SUBJECT = "bench.events"
JOB_BATCH = 16


async def run(jobs: int, consumers: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    results: dict[str, Any] = {"messages": jobs}
    with system() as sys_:
        async with connected(sys_) as nc:
            js = nc.jetstream(publish_async_max_pending=1000)
            await js.add_stream(
                StreamConfig(name=STREAM, subjects=[f"{SUBJECT}.>"], storage=StorageType.FILE)
            )
            body = encode_event(probes.submitted())
            results["message_bytes"] = len(body)
            began = time.perf_counter()
            futures = [await js.publish_async(f"{SUBJECT}.x", body) for _ in range(jobs)]
            await asyncio.gather(*futures)
            took = time.perf_counter() - began
            results["publish_async"] = {"seconds": round(took, 3), "msgs_per_s": round(jobs / took)}
            url = sys_.nats_server.url
            assert sys_.nats_server.process is not None
            server_pid = sys_.nats_server.process.pid
            for count in consumers:
                durable = await _durable(js, f"raw-{count}")
                results[f"fetch_ack_{count}"] = await _consume(
                    url, durable, count, jobs, FETCH_BATCH, server_pid=server_pid
                )
            await js.add_stream(
                StreamConfig(
                    name=EVENTS_STREAM, subjects=[f"{EVENTS_SUBJECT}.>"], storage=StorageType.FILE
                )
            )
            for count in consumers:
                durable = await _durable(js, f"job-{count}")
                events = f"{EVENTS_SUBJECT}.p{count}"  # per run: each job's subjects start empty
                results[f"job_messages_{count}"] = await _consume(
                    url, durable, count, jobs, JOB_BATCH, events=events, server_pid=server_pid
                )
    return results


async def _durable(js: JetStreamContext, name: str) -> str:
    """A new durable consumer on every message of the raw stream, with explicit acks."""
    config = ConsumerConfig(
        durable_name=name, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=20_000
    )
    await js.add_consumer(STREAM, config)
    return name


async def _consume(
    url: str,
    durable: str,
    processes: int,
    jobs: int,
    batch: int,
    *,
    server_pid: int,
    events: str | None = None,
) -> dict[str, Any]:
    """Consume the raw stream with ``processes`` raw consumers at once; their rate, and the
    CPU µs per message they and nats-server spent (the floor a FerrisQueue worker's and the
    server's CPU per job compare with)."""
    argv = [
        "-m",
        "bench.rawconsumer",
        url,
        STREAM,
        durable,
        str(batch),
        *([events] if events else []),
    ]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, *argv, cwd=REPO, stdin=PIPE, stdout=PIPE
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:  # every process bound to the consumer before any starts
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if line.strip() != b"ready":
                raise RuntimeError(f"raw consumer did not start: {line!r}")
        server_cpu = cpu_seconds(server_pid)
        outputs = await asyncio.wait_for(
            asyncio.gather(*(proc.communicate(b"go\n") for proc in procs)), 60 + jobs / 1000
        )
        server_cpu = _spent(server_cpu, cpu_seconds(server_pid))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    count = sum(r["count"] for r in reports)
    took = max(r["last"] for r in reports) - min(r["first"] for r in reports if r["count"])
    return {
        "processes": processes,
        "messages": count,
        "seconds": round(took, 3),
        "msgs_per_s": round(count / took) if took > 0 else None,
        "cpu_us_per_msg": {
            "consumers": round(sum(r["cpu"] for r in reports) / count * 1e6, 1) if count else None,
            "nats": round(server_cpu / count * 1e6, 1) if count and server_cpu else None,
        },
    }


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before
