"""Processing throughput: N no-op jobs already in the log, K worker processes, the projector
running; from the first ``started`` to the last ``succeeded`` as JetStream stored them.

Also measured in the same run: the projector's lag behind the log while the workers run
(sampled every 100 ms), how long it needs after the last ``succeeded`` to catch up, that
the read store ends with all N jobs completed, and each worker's peak RSS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from bench import probes
from bench.harness import (
    Proc,
    System,
    check_alive,
    connected,
    cpu_seconds,
    peak_rss_mib,
    system,
    wait_until,
)
from bench.profiling import PySpy
from ferrisqueue.store.db import init_schema, make_engine

log = logging.getLogger(__name__)


async def run(
    jobs: int,
    workers: int,
    *,
    concurrency: int,
    profile_dir: Path | None = None,
    metrics: bool = True,
    sync_always: bool = False,
) -> dict[str, Any]:
    """One configuration on a fresh system; returns its numbers. ``metrics``: the services
    collect Prometheus metrics (each scraped once at the end, as a check that they did);
    ``sync_always``: the server fsyncs before every ack."""
    with system(worker_concurrency=concurrency, metrics=metrics, sync_always=sync_always) as sys_:
        await sys_.topology()
        async with connected(sys_) as nc:
            fill_s = await probes.publish_pipeline(nc, jobs)
            log.info("processing: %d jobs in the log (%.1fs); starting the projector", jobs, fill_s)
            engine = make_engine(sys_.settings.effective_database_url)
            init_schema(engine)  # safe to race the projector's own
            projector = sys_.spawn("projections")
            # The scheduler runs as in a deployment: its dependency gate reads every
            # settling event (``succeeded`` included), so it costs something per job too.
            scheduler = sys_.spawn("scheduler")
            # The projector first folds the backlog of `submitted` events, so that what is
            # measured below is the steady state: workers running, every event projected.
            head = await probes.last_seq(nc)
            await wait_until(
                lambda: _position(engine, projector),
                lambda pos: pos >= head,
                within=60 + jobs / 500,
                what="the projector to fold the backlog",
                interval=0.1,
            )
            stop = asyncio.Event()
            sampler = probes.LagSampler(nc, engine)
            sampling = asyncio.create_task(sampler.run(stop))
            server_pid = sys_.nats_server.process.pid
            cpu_before = {
                "projector": cpu_seconds(projector.pid),
                "scheduler": cpu_seconds(scheduler.pid),
                "nats": cpu_seconds(server_pid),
            }
            async with probes.Counter(nc, "fq.job.*.*.succeeded", "bench-succeeded") as done:
                began = time.monotonic()
                procs = [
                    sys_.spawn("worker", FQ_WORKER_ID=f"bench-w{i + 1}") for i in range(workers)
                ]
                spy: list[PySpy] = []

                def profile() -> None:
                    # Attached once jobs flow, so start-up (imports) stays out of the profile.
                    for proc, name in ((procs[0], "worker"), (projector, "projector")):
                        if attached := PySpy.attach(proc.pid, profile_dir, f"{name}-{workers}w"):
                            spy.append(attached)

                try:
                    await _wait_done(done, jobs, [*procs, projector], profile)
                finally:
                    profiles = [s.stop() for s in spy]
                ended = time.monotonic()
                rss = [peak_rss_mib(p.pid) for p in procs]
                first = await probes.first_stored(nc, "fq.job.*.*.started", head + 1)
                last = await probes.last_stored(nc, "fq.job.*.*.succeeded")
                end_seq = await probes.last_seq(nc)
                await wait_until(
                    lambda: _position(engine, projector),
                    lambda pos: pos >= end_seq,
                    within=120,
                    what="the projector to catch up",
                    interval=0.05,
                )
                caught_up = time.monotonic()
                cpu = _cpu_per_job(
                    jobs,
                    cpu_before,
                    {
                        "workers": [cpu_seconds(p.pid) for p in procs],
                        "projector": cpu_seconds(projector.pid),
                        "scheduler": cpu_seconds(scheduler.pid),
                        "nats": cpu_seconds(server_pid),
                    },
                )
            stop.set()
            await sampling
            scraped = await _scraped_attempts(sys_, procs) if metrics else None
            completed = await asyncio.to_thread(probes.completed, engine)
            projector_rss = peak_rss_mib(projector.pid)
            engine.dispose()
    seconds = (last - first).total_seconds()
    result: dict[str, Any] = {
        "workers": workers,
        "concurrency": concurrency,
        "jobs": jobs,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(jobs / seconds, 1) if seconds > 0 else None,
        "events_recorded": end_seq - head,
        "completed_in_read_store": completed,
        "projection": sampler.summary(began, ended),
        "projection_catch_up_s": round(caught_up - ended, 3),
        "worker_peak_rss_mib": [round(r, 1) if r else None for r in rss],
        "projector_peak_rss_mib": round(projector_rss, 1) if projector_rss else None,
        "cpu_us_per_job": cpu,
        "metrics": metrics,
        "attempts_scraped": scraped,
    }
    if profiles:
        result["profile"] = {"worker": profiles[0], "projector": profiles[-1]}
    return result


def _cpu_per_job(
    jobs: int, before: dict[str, float | None], after: dict[str, Any]
) -> dict[str, float] | None:
    """CPU microseconds per job from the workers' start to the projector's catch-up: the
    workers together, the projector, the scheduler, nats-server. Less noisy than jobs/s on a shared
    machine, so it is what a change to the hot path is judged by."""
    workers = after["workers"]
    if None in workers or None in before.values() or None in after.values():
        return None
    spent = {
        "workers": sum(workers),
        **{name: after[name] - before[name] for name in ("projector", "scheduler", "nats")},
    }
    return {name: round(seconds / jobs * 1e6, 1) for name, seconds in spent.items()}


async def _position(engine: Engine, projector: Proc) -> int:
    check_alive(projector)
    return await asyncio.to_thread(probes.checkpoint, engine)


async def _wait_done(
    done: probes.Counter, jobs: int, procs: list[Proc], on_first: Callable[[], None]
) -> None:
    deadline = time.monotonic() + 60 + jobs / 100  # bounded: ~100 jobs/s at the very least
    first = True
    while (count := await done.count()) < jobs:
        if count and first:
            on_first()
            first = False
        for proc in procs:
            check_alive(proc)
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {count} of {jobs} jobs succeeded in time")
        await asyncio.sleep(0.05)


async def _scraped_attempts(sys_: System, procs: list[Proc]) -> int:
    """The workers' ``fq_job_attempts_total``, summed over one scrape of each: with
    metrics on it must equal the jobs (the check that they were on, and counted right)."""
    total = 0.0
    async with httpx.AsyncClient(timeout=5) as client:
        for proc in procs:
            port = sys_.metrics_ports[proc.name]
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            for family in text_string_to_metric_families(text):
                if family.name == "fq_job_attempts":
                    total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return int(total)
