"""The jobs projection split across two partitions (ferrisqueue/domain/partition.py), on the
in-memory log and one SQLite store: two projectors, each with its own checkpoint, lock and
consumer, together leave the store equal to a one-partition fold of the log (jobs,
timelines and every aggregate); a store projected by one partition is taken over by two from
where it stopped (projections/partitioning.py), and refused when that cannot be exact."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.domain.events import DeadLettered, Failed, Started, Succeeded, utcnow
from ferrisqueue.domain.partition import Partition, owner
from ferrisqueue.domain.workers import WORKER_STREAM
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.memlog import MemoryLog
from ferrisqueue.settings import Settings
from ferrisqueue.store import queries
from ferrisqueue.store.db import init_schema, make_engine
from projections.runner import Projector
from tests.support.memory import WAIT, memory_log, memory_settings, submit
from tests.support.refold import compare_with, rebuild
from tests.support.stores import BACKENDS, store_url_for
from tests.support.waits import wait_until

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def log() -> MemoryLog:
    return await memory_log()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return memory_settings(database_url=f"sqlite:///{tmp_path / 'read.db'}")


@pytest.fixture
def engine(store: Engine) -> Engine:
    """conftest's read store, on this module's ``settings``."""
    return store


def partition(settings: Settings, index: int, count: int = 2) -> Settings:
    return settings.model_copy(update={"projector_partitions": count, "projector_partition": index})


def connector(log: MemoryLog):  # type: ignore[no-untyped-def]
    connection = log.connect()

    async def connect() -> EventLog:
        return connection

    return connect


@contextlib.asynccontextmanager
async def projecting(log: MemoryLog, *settings: Settings) -> AsyncIterator[list[Projector]]:
    """Projectors (one per settings) running until the block ends."""
    projectors = [Projector(s, connect=connector(log)) for s in settings]
    running = [asyncio.create_task(p.run()) for p in projectors]
    try:
        yield projectors
    finally:
        for projector in projectors:
            projector.stop()
        await asyncio.gather(*running)


async def some_jobs(log: MemoryLog, count: int) -> list[str]:
    """``count`` jobs, finished in turn: completed, failed and dead-lettered, or pending."""
    jobs = []
    for n in range(count):
        job = await submit(log)
        jobs.append(job)
        if n % 3 == 2:
            continue  # left pending: counted in the queue depth
        await log.append(Started(job_id=job, queue="default", at=utcnow(), attempt=1, worker="w"))
        if n % 3 == 0:
            await log.append(
                Succeeded(job_id=job, queue="default", at=utcnow(), attempt=1, duration_ms=3.0)
            )
        else:
            await log.append(
                Failed(
                    job_id=job, queue="default", at=utcnow(), attempt=1, error=f"boom {n % 2}",
                    error_type="ValueError", duration_ms=5.0,
                )
            )  # fmt: skip
            await log.append(DeadLettered(job_id=job, queue="default", at=utcnow(), reason="x"))
    return jobs


def checkpoints(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        return {row.name: row.position for row in queries.checkpoints(session)}


async def reached(engine: Engine, done: Callable[[dict[str, int]], bool], what: str) -> None:
    """Wait until the store's checkpoints satisfy ``done`` (the store, not the log, changes:
    polled)."""
    await wait_until(lambda: asyncio.to_thread(checkpoints, engine), done, timeout=WAIT, what=what)


def jobs_at(last: int, *names: str) -> Callable[[dict[str, int]], bool]:
    """The jobs projection's checkpoints are ``names`` (default: those of two partitions),
    all at ``last``."""
    wanted = dict.fromkeys(names or ("jobs/0of2", "jobs/1of2"), last)
    return lambda found: {k: v for k, v in found.items() if k.startswith("jobs")} == wanted


@pytest.mark.parametrize("backend", BACKENDS)
async def test_two_partitions_fold_the_log_like_one(
    log: MemoryLog, backend: str, tmp_path: Path
) -> None:
    """On PostgreSQL too, where two partitions' transactions run side by side: the metrics
    and depth they both merge into lose no increment."""
    with store_url_for(backend, tmp_path) as url:
        settings = memory_settings(database_url=url, projector_batch=5)
        engine = make_engine(url)
        try:
            init_schema(engine)
            await two_partitions_fold_the_log_like_one(log, settings, engine, tmp_path)
        finally:
            engine.dispose()


async def two_partitions_fold_the_log_like_one(
    log: MemoryLog, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    jobs = await some_jobs(log, 60)
    assert {owner(job, 2) for job in jobs} == {0, 1}  # both partitions have work
    last = await log.last_seq("FQ_EVENTS")

    async with projecting(log, partition(settings, 0), partition(settings, 1)):
        await reached(engine, jobs_at(last), "the jobs projection at the end")
        # More events while both run, landing in both partitions' batches.
        jobs += await some_jobs(log, 30)
        last = await log.last_seq("FQ_EVENTS")
        await reached(engine, jobs_at(last), "the jobs projection at the end")

    positions = checkpoints(engine)
    assert positions["jobs/0of2"] == positions["jobs/1of2"] == last
    assert "jobs" not in positions
    # Partition 0 runs the workers projection; partition 1 created no consumer for it.
    assert await log.consumer_definition(WORKER_STREAM, "fq-projector-workers") is not None
    assert await log.consumer_definition(WORKER_STREAM, "fq-projector-workers-1of2") is None

    fresh = await rebuild(settings, tmp_path, connector(log))
    result = compare_with(engine, fresh)
    assert result.jobs_compared == len(jobs)
    assert result.differences == []


async def test_a_store_of_one_partition_is_taken_over_by_two_from_where_it_stopped(
    log: MemoryLog, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    await some_jobs(log, 30)
    first = await log.last_seq("FQ_EVENTS")
    async with projecting(log, settings):
        await reached(engine, jobs_at(first, "jobs"), "one partition at the end")
    assert checkpoints(engine)["jobs"] == first
    await some_jobs(log, 30)
    last = await log.last_seq("FQ_EVENTS")

    async with projecting(log, partition(settings, 0), partition(settings, 1)):
        await reached(engine, jobs_at(last), "the jobs projection at the end")

    assert {k: v for k, v in checkpoints(engine).items() if k.startswith("jobs")} == {
        "jobs/0of2": last, "jobs/1of2": last
    }  # fmt: skip
    # Nothing applied twice (the metrics would count it twice), nothing skipped.
    fresh = await rebuild(settings, tmp_path, connector(log))
    assert compare_with(engine, fresh).differences == []


async def test_partitions_that_stopped_apart_are_not_taken_over(
    log: MemoryLog, settings: Settings, engine: Engine
) -> None:
    await some_jobs(log, 30)
    last = await log.last_seq("FQ_EVENTS")
    async with projecting(log, partition(settings, 0, 3)):  # only one of three ran
        await reached(engine, lambda found: found.get("jobs/0of3") == last, "partition 0 of 3")

    # Neither two partitions nor one could start from a position every old one reached.
    for refused in (partition(settings, 1, 2), settings):
        projector = Projector(refused, connect=connector(log))
        with pytest.raises(ConfigurationError, match="stopped at different positions"):
            await asyncio.wait_for(projector.run(), WAIT)
    assert checkpoints(engine)["jobs/0of3"] == last

    # The missing partitions catch up; then one projector takes the store over.
    async with projecting(log, partition(settings, 1, 3), partition(settings, 2, 3)):
        await reached(engine, jobs_at(last, "jobs/0of3", "jobs/1of3", "jobs/2of3"), "3 of 3")
    async with projecting(log, settings):
        await reached(engine, jobs_at(last, "jobs"), "one partition at the end")


async def test_a_running_projector_of_the_old_partitioning_refuses_the_change(
    log: MemoryLog, settings: Settings, engine: Engine
) -> None:
    await some_jobs(log, 3)
    last = await log.last_seq("FQ_EVENTS")
    async with projecting(log, settings):  # one partition, still leading
        await reached(engine, jobs_at(last, "jobs"), "one partition at the end")
        projector = Projector(partition(settings, 0), connect=connector(log))
        with pytest.raises(ConfigurationError, match="still leads this read store"):
            await asyncio.wait_for(projector.run(), WAIT)
    assert checkpoints(engine)["jobs"] == last


def test_the_lock_of_a_partition_is_its_own() -> None:
    from projections.partitioning import lock_name

    assert lock_name(Partition()) == "projector"
    assert lock_name(Partition(1, 2)) == "projector-1of2"


async def test_on_a_fresh_store_projectors_of_different_counts_do_not_both_run(
    log: MemoryLog, settings: Settings, engine: Engine
) -> None:
    async with projecting(log, partition(settings, 0)):
        await wait_until(  # it leads (its consumer exists once it settled the store)
            lambda: log.consumer_definition("FQ_EVENTS", "fq-projector-0of2"),
            lambda found: found is not None,
            timeout=WAIT,
            what="partition 0 of 2 leading",
        )
        assert checkpoints(engine) == {}  # nothing applied: only the count tells
        for other in (settings, partition(settings, 1, 3)):
            projector = Projector(other, connect=connector(log))
            with pytest.raises(ConfigurationError, match="still leads this read store"):
                await asyncio.wait_for(projector.run(), WAIT)
        await some_jobs(log, 3)
        last = await log.last_seq("FQ_EVENTS")
        await reached(engine, lambda found: found.get("jobs/0of2") == last, "partition 0 of 2")
    assert "jobs" not in checkpoints(engine)
