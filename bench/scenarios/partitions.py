"""The jobs projection split across partitions, in processes: how many events per second N
partitions apply together into one read store, with no NATS.

The events are :mod:`bench.scenarios.projection`'s (a job's ``submitted``, ``started``,
``succeeded``, interleaved as under a pool of workers). Each partition is a process of its
own (one core at most each, as N projector processes would be): it takes every event in
log order, as a partition's consumer delivers them, decodes those of its jobs and passes
over the others (:func:`projections.follow.jobs_projection`'s decode), and applies them in
batches of ``batch`` through :class:`projections.jobs.JobsProjection` under its partition's
checkpoint, one transaction per batch. All partitions start together (a barrier once each
has its events in memory); the run's time is until the last one committed its last batch.
Fresh SQLite file and, when reachable, fresh PostgreSQL database per run
(``FQ_BENCH_POSTGRES_URL``, default: the tests' server on 127.0.0.1:5432).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from sqlmodel import Session

from bench.scenarios.dashboard import postgres_database
from bench.scenarios.projection import _messages
from ferrisqueue.domain.partition import Partition
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.store.db import init_schema, make_engine
from projections.jobs import NAME, JobsProjection, Passed

log = logging.getLogger(__name__)

Message = tuple[int, str, bytes, datetime]


def run(
    events: int, partitions: tuple[int, ...] = (1, 2), *, batch: int = 500
) -> list[dict[str, Any]]:
    """Apply ``events`` (rounded down to whole jobs) with each count of ``partitions``, on
    each reachable store."""
    messages = _messages(events // 3)
    results = []
    for count in partitions:
        for name in ("SQLite", "PostgreSQL"):
            with _store(name) as url:
                if url is None:
                    continue
                log.info("partitions: %d events, %d partition(s), %s", len(messages), count, name)
                results.append(
                    {"store": name, "partitions": count, "batch": batch,
                     **_measure(url, messages, count, batch)}
                )  # fmt: skip
    return results


@contextlib.contextmanager
def _store(name: str) -> Iterator[str | None]:
    """A fresh store of that kind (None: no PostgreSQL reachable)."""
    if name == "PostgreSQL":
        with postgres_database() as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="fq-bench-partitions-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'read.db'}"


def _measure(url: str, messages: list[Message], count: int, batch: int) -> dict[str, Any]:
    engine = make_engine(url)
    init_schema(engine)
    engine.dispose()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(count + 1)
    results = context.Queue()
    workers = [
        context.Process(
            target=_partition, args=(url, messages, Partition(k, count), batch, barrier, results)
        )
        for k in range(count)
    ]
    for worker in workers:
        worker.start()
    barrier.wait()  # every partition holds its events: go
    wall = time.perf_counter()
    found = [results.get(timeout=600) for _ in workers]
    elapsed = time.perf_counter() - wall
    for worker in workers:
        worker.join()
    n = len(messages)
    return {
        "events": n,
        "events_per_s": round(n / elapsed),
        "wall_s": round(elapsed, 2),
        "cpu_us_per_event": round(sum(r["cpu_s"] for r in found) / n * 1e6, 1),
        "per_partition_s": [round(r["wall_s"], 2) for r in sorted(found, key=lambda r: r["k"])],
    }


def _partition(
    url: str,
    messages: list[Message],
    partition: Partition,
    batch: int,
    barrier: Barrier,
    results: Any,
) -> None:
    """One partition's projector: decode its own events, pass over the others, apply."""
    engine = make_engine(url)
    projection = JobsProjection(name=partition.checkpoint(NAME), shared=not partition.whole)
    barrier.wait()
    cpu, wall = time.process_time(), time.perf_counter()
    position = 0
    for start in range(0, len(messages), batch):
        items = [
            StoredEvent.decode(*m) if partition.owns_subject(m[1]) else Passed(m[0], m[3])
            for m in messages[start : start + batch]
        ]
        with Session(engine) as session:
            position = projection.apply_batch(session, items, after=position)
    results.put(
        {"k": partition.index, "cpu_s": time.process_time() - cpu,
         "wall_s": time.perf_counter() - wall}
    )  # fmt: skip
    engine.dispose()
