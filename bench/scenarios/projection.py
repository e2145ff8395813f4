"""The projector's own speed, in process: how many events per second the jobs projection
decodes and applies to a read store, with no NATS and no other process on the machine.

The events are what a job's life writes (``submitted`` with a small payload, ``started``,
``succeeded``), encoded as producers encode them. Each run decodes them as the projector's
receiver does (:meth:`StoredEvent.of`) and applies them in batches of ``batch`` through
:class:`projections.jobs.JobsProjection`, one transaction per batch, as the projector does
when it runs behind the log. Both steps are timed (CPU of this process and wall clock), on a
fresh SQLite file and, when one is reachable, a fresh PostgreSQL database
(``FQ_BENCH_POSTGRES_URL``, default: the tests' server on 127.0.0.1:5432).
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session

from bench.scenarios.dashboard import postgres_database
from ferrisqueue.domain.events import Started, Submitted, Succeeded, encode_event
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.domain.subjects import job_subject
from ferrisqueue.store.db import init_schema, make_engine
from projections.jobs import JobsProjection

log = logging.getLogger(__name__)


def run(events: int, *, batch: int = 500) -> list[dict[str, Any]]:
    """Decode and apply ``events`` (rounded down to whole jobs) on each reachable store."""
    messages = _messages(events // 3)
    results = []
    with tempfile.TemporaryDirectory(prefix="fq-bench-projection-") as tmp:
        stores = [("SQLite", f"sqlite:///{Path(tmp) / 'read.db'}")]
        with postgres_database() as url:
            if url is not None:
                stores.append(("PostgreSQL", url))
            for name, store in stores:
                log.info("projection: %d events into %s", len(messages), name)
                results.append({"store": name, "batch": batch, **_measure(store, messages, batch)})
    return results


def _messages(jobs: int) -> list[tuple[int, str, bytes, datetime]]:
    """``(seq, subject, bytes, stored_at)`` of ``jobs`` jobs' lives, in log order: jobs
    interleave as they do under a pool of workers (all submitted, then started and done)."""
    at = datetime(2026, 12, 1, tzinfo=UTC)
    ticks = iter(range(3 * jobs))
    ids = [new_job_id() for _ in range(jobs)]

    def now() -> datetime:  # every event at its own time, as in a real log
        return at + timedelta(microseconds=137 * next(ticks))

    events: list[Any] = [
        Submitted(job_id=j, queue="default", at=now(), type="echo", payload={"n": n, "to": "a@b.c"})
        for n, j in enumerate(ids)
    ]
    for j in ids:
        events.append(Started(job_id=j, queue="default", at=now(), attempt=1, worker="w-1"))
        events.append(
            Succeeded(
                job_id=j, queue="default", at=now(), attempt=1, result={"ok": 1}, duration_ms=1
            )
        )
    return [
        (seq, job_subject(e.queue, e.job_id, e.event), encode_event(e), e.at + timedelta(0, 0.01))
        for seq, e in enumerate(events, start=1)
    ]


def _measure(
    url: str, messages: list[tuple[int, str, bytes, datetime]], batch: int
) -> dict[str, Any]:
    engine = make_engine(url)
    init_schema(engine)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        stored = [StoredEvent.decode(*m) for m in messages]
        decode_cpu = time.process_time() - cpu
        projection = JobsProjection()
        cpu_apply, wall_apply = time.process_time(), time.perf_counter()
        position = 0
        for start in range(0, len(stored), batch):
            with Session(engine) as session:
                position = projection.apply_batch(
                    session, stored[start : start + batch], after=position
                )
        apply_cpu = time.process_time() - cpu_apply
        apply_wall = time.perf_counter() - wall_apply
        total_wall = time.perf_counter() - wall
        n = len(messages)
        return {
            "events": n,
            "events_per_s": round(n / total_wall),
            "decode_us": round(decode_cpu / n * 1e6, 1),
            "apply_cpu_us": round(apply_cpu / n * 1e6, 1),
            "apply_wall_us": round(apply_wall / n * 1e6, 1),
        }
    finally:
        engine.dispose()
