"""End-to-end latency at fixed rates: an open-loop submitter (job i is sent at t0 + i/rate,
whether or not earlier ones were answered) for ``seconds``, while 2 workers and the projector
run; submit -> ``started`` and submit -> ``succeeded`` per job. Each rate starts once the
projector has caught up with the previous one.

Times come from the events' ``at`` (every process stamps with the same machine clock). The
submit time is the ``at`` of the ``submitted`` event on the NATS path (stamped just before
the publish) and the client's clock just before the request on the HTTP path, so the HTTP
figures include the request and the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime
from typing import Any

import nats.js.errors
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy import Engine

from bench import probes
from bench.harness import connected, percentile, system, wait_until
from bench.httpload import HttpLoad
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.domain.workers import WORKER_STREAM
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.store.db import init_schema, make_engine

LATE = 0.005
"""A submission sent this much later than its slot counts as late (the client fell behind)."""


async def run(
    rates: tuple[int, ...], *, seconds: float, workers: int, concurrency: int
) -> list[dict[str, Any]]:
    results = []
    with system(worker_concurrency=concurrency) as sys_:
        await sys_.topology()
        sys_.spawn("projections")
        for i in range(workers):
            sys_.spawn("worker", FQ_WORKER_ID=f"bench-w{i + 1}")
        await sys_.start_gateway()
        async with connected(sys_) as nc:
            await _workers_ready(nc, workers)
            async with HttpLoad(sys_.gateway_url, connections=256) as http:
                engine = make_engine(sys_.settings.effective_database_url)
                init_schema(engine)
                for path in ("nats", "http"):
                    for rate in rates:
                        results.append(await _one(nc, http, path, rate, seconds))
                        # Each rate starts on an idle system: the projector has caught up.
                        await _caught_up(nc, engine)
                engine.dispose()
    return results


async def _caught_up(nc: Client, engine: Engine) -> None:
    head = await probes.last_seq(nc)

    async def position() -> int:
        return await asyncio.to_thread(probes.checkpoint, engine)

    await wait_until(position, lambda pos: pos >= head, within=120, what="the projector")


async def _workers_ready(nc: Client, workers: int) -> None:
    """Each worker publishes a heartbeat once its consumer is pulling."""
    js = nc.jetstream()

    async def beating() -> int:
        ready = 0
        for i in range(workers):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.get_last_msg(WORKER_STREAM, f"fq.worker.bench-w{i + 1}.heartbeat")
                ready += 1
        return ready

    await wait_until(beating, lambda n: n == workers, within=30, what="worker heartbeats")


async def _one(nc: Client, http: HttpLoad, path: str, rate: int, seconds: float) -> dict[str, Any]:
    start_seq = await probes.last_seq(nc) + 1
    event_log = NatsLog(nc)
    sent: dict[str, float] = {}
    acked: list[float] = []
    late = 0
    shed = 0

    async def via_nats() -> None:
        event = probes.submitted()
        await event_log.append(event)
        sent[event.job_id] = event.at.timestamp()
        acked.append(time.time() - event.at.timestamp())

    async def via_http() -> None:
        nonlocal shed
        began = time.time()
        answer = await http.post("/jobs", {"type": probes.TASK})
        if answer.status == 503:  # refused by admission control: no job, nothing to time
            shed += 1
            return
        answer.expect(202)
        sent[answer.json()["job_id"]] = began
        acked.append(time.time() - began)

    submit = via_nats if path == "nats" else via_http
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()
    tasks = []
    t0 = loop.time()
    for i in range(total):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -LATE:
            late += 1
        tasks.append(asyncio.create_task(submit()))
    # Bounded: submissions still unanswered after a minute are given up and counted.
    _, unanswered = await asyncio.wait(tasks, timeout=60)
    for task in unanswered:
        task.cancel()
    await asyncio.gather(*unanswered, return_exceptions=True)
    errors = sum(1 for t in tasks if t.done() and not t.cancelled() and t.exception())
    times = await _lifecycle(nc, start_seq, set(sent), within=60)
    to_start = [1000 * (times[j][0] - t) for j, t in sent.items()]
    to_done = [1000 * (times[j][1] - t) for j, t in sent.items()]
    return {
        "path": path,
        "rate": rate,
        "seconds": seconds,
        "jobs": len(sent),
        "late_submissions": late,
        "unanswered": len(unanswered),
        "shed": shed,
        "errors": errors,
        "submit_to_ack_ms": _pcts([1000 * a for a in acked]),
        "submit_to_start_ms": _pcts(to_start),
        "submit_to_succeeded_ms": _pcts(to_done),
    }


async def _lifecycle(
    nc: Client, start_seq: int, job_ids: set[str], *, within: float
) -> dict[str, tuple[float, float]]:
    """``job_id -> (started at, succeeded at)`` read from the log, once all have succeeded."""
    started: dict[str, float] = {}
    succeeded: dict[str, float] = {}
    sub = await nc.jetstream().subscribe(
        "fq.job.*.*.*",
        stream=EVENT_STREAM,
        ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq
        ),
    )
    deadline = time.monotonic() + within
    try:
        while len(succeeded) < len(job_ids):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(succeeded)} of {len(job_ids)} jobs succeeded in time")
            with contextlib.suppress(TimeoutError):
                msg = await sub.next_msg(timeout=min(remaining, 1.0))
                kind = msg.subject.rsplit(".", 1)[-1]
                if kind in ("started", "succeeded"):
                    body = json.loads(msg.data)
                    if body["job_id"] in job_ids:
                        at = datetime.fromisoformat(body["at"]).timestamp()
                        (started if kind == "started" else succeeded).setdefault(body["job_id"], at)
    finally:
        await sub.unsubscribe()
    return {j: (started[j], succeeded[j]) for j in job_ids}


def _pcts(values: list[float]) -> dict[str, float | None]:
    return {
        f"p{q}": None if (v := percentile(values, q)) is None else round(v, 2) for q in (50, 95, 99)
    }
