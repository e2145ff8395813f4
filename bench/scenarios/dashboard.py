"""Dashboard page loads at scale (issue 20): every page of the dashboard against a read
store of 100,000 jobs and 340,000 events, on SQLite and on PostgreSQL.

* **Fill**: generated events go through the real jobs projection
  (:class:`projections.jobs.JobsProjection`, ``apply_batch`` in batches of
  ``FQ_PROJECTOR_BATCH``'s default size), so every table the pages read (jobs, timeline,
  minute metrics, queue depth, failed attempts, dead letters) holds what the projector would
  have written. Per 20 jobs: 14 succeed (3 events), 3 fail twice and are dead-lettered (7),
  1 is delayed into the next hours (1), 1 waits for a retry (3), 1 is queued (1), over 4
  queues and 5 job types, created over the last 24 hours; one job in ten of a cron schedule.
* **Serve**: a real gateway (uvicorn) on an embedded nats-server with 10 cron schedules.
* **Load**: each page is run by Streamlit's ``AppTest`` in this process (the page's script
  top to bottom, with every gateway call it makes, nothing cached: the cache is cleared before
  each run), ``BENCH_PAGE_RUNS`` times (5); the median and the slowest are reported. What a
  browser adds (sending the elements, drawing them) is not in these numbers.

``python -m bench --only dashboard [--jobs 100000]``; PostgreSQL from ``FQ_BENCH_POSTGRES_URL``
(default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``: a fresh database is created
and dropped), skipped with a note when unreachable.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, func, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from bench.harness import REPO, env_int, system
from ferrisqueue.domain.events import (
    BaseEvent,
    DeadLettered,
    Failed,
    Released,
    Scheduled,
    Started,
    Submitted,
    Succeeded,
    cron_actor,
    utcnow,
)
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.settings import Settings
from ferrisqueue.store.db import init_schema, make_engine
from ferrisqueue.store.models import JobEventRow, JobRow
from projections.jobs import JobsProjection

log = logging.getLogger("bench")

PAGES = {
    "Overview": "views/overview.py",
    "Workers": "views/workers.py",
    "Errors": "views/errors.py",
    "Jobs": "views/jobs.py",
    "Scheduled": "views/scheduled.py",
    "Cron": "views/cron.py",
    "Queues": "views/queues.py",
    "Error groups": "views/error_groups.py",
    "Submit": "views/submit.py",
}
QUEUES = ("default", "email", "reports", "images")
TYPES = ("echo", "email", "report", "resize", "fail")
SCHEDULES = tuple(f"cron-{n}" for n in range(10))
ERRORS = tuple(
    (kind, f"{what} (code {code})")
    for kind, what in (
        ("TimeoutError", "the SMTP server did not answer in 30 s"),
        ("ValueError", "the image is not a PNG"),
        ("OSError", "the printer is on fire"),
        ("KeyError", "'customer_id'"),
    )
    for code in range(5)
)
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ANALYZE_EVERY = 50_000


def generated(jobs: int, now: datetime) -> Iterator[BaseEvent]:
    """3.4 events per job on average, in time order per job, jobs created over the last day."""
    step = timedelta(days=1) / jobs
    begin = now - timedelta(days=1)
    for n in range(jobs):
        at = begin + n * step
        queue, type_ = QUEUES[n % len(QUEUES)], TYPES[n % len(TYPES)]
        actor = cron_actor(SCHEDULES[n % len(SCHEDULES)]) if n % 10 == 3 else "key:bench"
        job: dict[str, Any] = {"job_id": new_job_id(), "queue": queue}
        ms = timedelta(milliseconds=1)
        kind = n % 20
        if kind in (18,):  # delayed: due in the next hours
            yield Scheduled(**job, at=at, type=type_, run_at=now + n * step / 4, actor=actor)
            continue
        yield Submitted(**job, at=at, type=type_, actor=actor)
        if kind == 19:  # queued, no worker yet
            continue
        worker = f"worker:w{n % 4}"
        yield Started(**job, at=at + 40 * ms, attempt=1, worker="w", actor=worker)
        if kind < 14:
            yield Succeeded(**job, at=at + 90 * ms, attempt=1, duration_ms=50, actor=worker)
            continue
        error_type, error = ERRORS[n % len(ERRORS)]
        failure = {"error": error, "error_type": error_type, "actor": worker}
        if kind == 17:  # a retry waiting
            retry = now + timedelta(minutes=1 + n % 60)
            yield Failed(**job, at=at + 90 * ms, attempt=1, retry_at=retry, **failure)
            continue
        yield Failed(**job, at=at + 90 * ms, attempt=1, retry_at=at + 200 * ms, **failure)
        yield Released(**job, at=at + 200 * ms, attempt=1, actor="scheduler")
        yield Started(**job, at=at + 240 * ms, attempt=2, worker="w", actor=worker)
        yield Failed(**job, at=at + 290 * ms, attempt=2, duration_ms=50, **failure)
        yield DeadLettered(**job, at=at + 300 * ms, reason="out of attempts", actor="scheduler")


def fill(url: str, jobs: int, batch: int) -> dict[str, Any]:
    """Project ``jobs`` generated jobs into the store at ``url``; how long it took and what
    the store holds.

    On PostgreSQL the tables are analysed every ``ANALYZE_EVERY`` events and at the end, as
    autovacuum would (the test server runs without it): with statistics from an empty table
    the planner scans ``jobs`` for every batch's lookup of its jobs, and the fill slows down
    as the table grows."""
    engine = make_engine(url)
    init_schema(engine)
    analyze = engine.dialect.name == "postgresql"
    projection = JobsProjection()
    began = time.perf_counter()
    pending: list[StoredEvent] = []
    seq = 0
    for event in generated(jobs, utcnow()):
        seq += 1
        pending.append(StoredEvent(seq, event.subject, event.at, b"", event, None))  # type: ignore[arg-type]
        if len(pending) == batch:
            with Session(engine) as session:
                projection.apply_batch(session, pending)
            pending = []
        if analyze and seq % ANALYZE_EVERY == 0:
            _analyze(engine)
    if pending:
        with Session(engine) as session:
            projection.apply_batch(session, pending)
    if analyze:
        _analyze(engine)
    took = time.perf_counter() - began
    with Session(engine) as session:
        counts = {
            "jobs": session.exec(select(func.count()).select_from(JobRow)).one(),
            "events": session.exec(select(func.count()).select_from(JobEventRow)).one(),
        }
    engine.dispose()
    return {**counts, "seconds": round(took, 1), "events_per_s": round(seq / took)}


def _analyze(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("ANALYZE"))
        connection.commit()


def page_loads(gateway_url: str, runs: int) -> dict[str, dict[str, float]]:
    """Each page run ``runs`` times in AppTest, cold (the data cache cleared): ms."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # "no runtime": AppTest's bare mode
    saved = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("FQ_")]}
    os.environ.update(FQ_GATEWAY_URL=gateway_url, FQ_AUTH="off")
    try:
        at = AppTest.from_file(str(REPO / "streamlit_app" / "app.py"), default_timeout=60).run()
        results = {}
        for name, path in PAGES.items():
            times = []
            for _ in range(runs + 1):  # the first run imports the page's modules: not counted
                st.cache_data.clear()
                began = time.perf_counter()
                at = at.switch_page(path).run()
                times.append((time.perf_counter() - began) * 1000)
                if at.exception:
                    raise RuntimeError(f"{name}: {[e.value for e in at.exception]}")
            times = times[1:]
            results[name] = {"median_ms": statistics.median(times), "max_ms": max(times)}
        return results
    finally:
        for key in [k for k in os.environ if k.startswith("FQ_")]:
            del os.environ[key]
        os.environ.update(saved)


def api_calls(gateway_url: str, runs: int) -> dict[str, float]:
    """The heaviest gateway reads the new pages make, each ``runs`` times: median ms."""
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        key = client.get("/errors").json()["groups"][0]["key"]
        paths = {
            "GET /queues": "/queues",
            "GET /projections": "/projections",
            "GET /stats/throughput (1 h)": "/stats/throughput",
            "GET /schedules (10)": "/schedules",
            "GET /jobs?status=failed": "/jobs?status=failed&limit=100",
            "GET /jobs/waiting (scheduled)": "/jobs/waiting?reason=scheduled",
            "GET /jobs/waiting (retrying)": "/jobs/waiting?reason=retrying",
            "GET /schedules/{name}/jobs": f"/schedules/{SCHEDULES[0]}/jobs",
            "GET /stats/queues/{queue} (1 h)": "/stats/queues/default",
            "GET /stats/queues/{queue} (24 h)": "/stats/queues/default?since="
            + (utcnow() - timedelta(days=1)).isoformat().replace("+", "%2B"),
            "GET /errors (24 h)": "/errors",
            "GET /errors/{key}/attempts": f"/errors/{key}/attempts",
        }
        out = {}
        for name, path in paths.items():
            times = []
            for _ in range(runs):
                began = time.perf_counter()
                answer = client.get(path)
                times.append((time.perf_counter() - began) * 1000)
                answer.raise_for_status()
            out[name] = statistics.median(times)
        return out


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A fresh PostgreSQL database (dropped after), or None when none is reachable."""
    admin_url = os.environ.get("FQ_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"fq_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        log.warning("no PostgreSQL at %s (%s): SQLite only", admin_url, exc.orig)
        admin.dispose()
        yield None
        return
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


async def run(jobs: int = 100_000) -> dict[str, Any]:
    runs = env_int("BENCH_PAGE_RUNS", 5)
    batch = Settings(_env_file=None).projector_batch
    results: dict[str, Any] = {"jobs": jobs, "page_runs": runs, "backends": {}}
    with postgres_database() as postgres:
        backends: dict[str, str | None] = {"SQLite": None, "PostgreSQL": postgres}
        for backend, url in backends.items():
            if backend == "PostgreSQL" and url is None:
                continue
            with system(**({"database_url": url} if url else {})) as sys_:
                store = url or sys_.settings.effective_database_url
                log.info("dashboard: filling %s with %d jobs", backend, jobs)
                filled = fill(store, jobs, batch)
                log.info("dashboard: %s", filled)
                await sys_.topology()
                await sys_.start_gateway()
                async with httpx.AsyncClient(base_url=sys_.gateway_url, timeout=10) as client:
                    for name in SCHEDULES:
                        answer = await client.post(
                            "/schedules",
                            json={"name": name, "schedule": "@every 1h", "job": {"type": "echo"}},
                        )
                        answer.raise_for_status()
                log.info("dashboard: loading each page %d times on %s", runs, backend)
                results["backends"][backend] = {
                    "fill": filled,
                    "pages": page_loads(sys_.gateway_url, runs),
                    "api": api_calls(sys_.gateway_url, runs),
                }
    return results


def markdown(results: dict[str, Any]) -> list[str]:
    """The page-load table (and the gateway reads under it), one column pair per backend."""
    backends = results["backends"]
    names = list(backends)
    out = [
        f"### Dashboard page loads, {results['jobs']:,} jobs (AppTest, cold cache, "
        f"median / slowest of {results['page_runs']})",
        "",
    ]
    for name in names:
        fill = backends[name]["fill"]
        out.append(
            f"{name}: {fill['jobs']:,} jobs, {fill['events']:,} events projected in "
            f"{fill['seconds']} s ({fill['events_per_s']:,} events/s)."
        )
    out.append("")
    header = ["page", *(f"{name} ms" for name in names)]
    rows = [
        [page, *(_pair(backends[name]["pages"][page]) for name in names)]
        for page in backends[names[0]]["pages"]
    ]
    out += [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "| gateway read (median ms) | " + " | ".join(names) + " |",
        "|---|" + "|".join("---" for _ in names) + "|",
    ]
    for call in backends[names[0]]["api"]:
        out.append(
            f"| {call} | " + " | ".join(f"{backends[n]['api'][call]:.0f}" for n in names) + " |"
        )
    return [*out, ""]


def _pair(times: dict[str, float]) -> str:
    return f"{times['median_ms']:.0f} / {times['max_ms']:.0f}"


if __name__ == "__main__":  # a quick look without the rest of `python -m bench`
    import asyncio
    import sys

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    print("\n".join(markdown(asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)))))
