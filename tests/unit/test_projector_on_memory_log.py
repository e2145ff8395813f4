"""The projector (projections/runner.py) on the in-memory log and a SQLite read store,
including its crash window: every event reaches the store once and in order; a delivery lost
in transit (issue 13) is refilled from the log instead of skipped (projections/contiguity.py);
a projector dying between its commit and its ack applies nothing twice when it comes back."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.domain.events import Started, Succeeded, utcnow
from ferrisqueue.domain.states import JobStatus
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.domain.workers import WORKER_STREAM
from ferrisqueue.errors import ConfigurationError, NatsUnavailable
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.memlog import MemoryLog
from ferrisqueue.log.port import StoredMessage
from ferrisqueue.log.topology import PROJECTOR_CONSUMER
from ferrisqueue.settings import Settings
from ferrisqueue.store import queries
from ferrisqueue.store.db import commit_at
from projections import follow, jobs
from projections.follow import JOBS, ProjectionLoop
from projections.runner import Projector
from tests.support.memory import WAIT, memory_log, memory_settings, submit

pytestmark = pytest.mark.timeout(10)


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


async def follow_until(
    log: MemoryLog,
    engine: Engine,
    projection: ProjectionLoop,
    position: int,
    *,
    stopped: Callable[[], None] = lambda: None,
) -> None:
    """Run ``projection`` until the store's checkpoint reaches ``position``, then stop it and
    wait for it to end (``stopped`` is called once it is told to stop, before the wait)."""
    stopping = asyncio.Event()
    running = asyncio.create_task(projection.run(stopping))
    try:
        await log.wait_until(lambda: checkpoint(engine) >= position, timeout=WAIT)
    finally:
        stopping.set()
        stopped()
        await running


def checkpoint(engine: Engine) -> int:
    with Session(engine) as session:
        return queries.checkpoint(session, jobs.NAME)


async def completed_job(log: MemoryLog) -> str:
    """A job with three events: submitted, started, succeeded."""
    job = await submit(log)
    await log.append(Started(job_id=job, queue="default", at=utcnow(), attempt=1, worker="w"))
    await log.append(
        Succeeded(job_id=job, queue="default", at=utcnow(), attempt=1, duration_ms=1.0)
    )
    return job


def projector_on(log: MemoryLog, settings: Settings) -> tuple[Projector, MemoryLog]:
    """A projector process with its own connection to ``log``."""
    connection = log.connect()

    async def connect() -> EventLog:
        return connection

    return Projector(settings, connect=connect), connection


async def project_until(log: MemoryLog, settings: Settings, engine: Engine, seq: int) -> None:
    """Run a projector until the store's checkpoint reaches ``seq``, then stop it."""
    projector, _ = projector_on(log, settings)
    running = asyncio.create_task(projector.run())
    try:
        await log.wait_until(lambda: checkpoint(engine) >= seq, timeout=WAIT)
    finally:
        projector.stop()
        await running


def timeline(engine: Engine, job: str) -> list[str]:
    with Session(engine) as session:
        return [row.event for row in queries.job_timeline(session, job)]


def status(engine: Engine, job: str) -> JobStatus | None:
    with Session(engine) as session:
        state = queries.get_job(session, job)
        return None if state is None else state.status


async def test_every_event_reaches_the_read_store_once_and_in_order(
    log: MemoryLog, settings: Settings, engine: Engine
) -> None:
    first, second = await completed_job(log), await completed_job(log)

    await project_until(log, settings, engine, 6)

    assert checkpoint(engine) == 6
    assert timeline(engine, first) == timeline(engine, second) == [
        "submitted", "started", "succeeded"
    ]  # fmt: skip
    assert status(engine, first) is JobStatus.COMPLETED


async def test_a_lost_delivery_is_refilled_from_the_log_not_skipped(
    log: MemoryLog, settings: Settings, engine: Engine
) -> None:
    job = await completed_job(log)
    log.lose(EVENT_STREAM, PROJECTOR_CONSUMER, 2)  # `started` vanishes in transit once

    await project_until(log, settings, engine, 3)

    assert timeline(engine, job) == ["submitted", "started", "succeeded"]
    assert status(engine, job) is JobStatus.COMPLETED
    with Session(engine) as session:
        assert queries.projection_health(session)[jobs.NAME].lost_deliveries == 1


async def test_a_consumer_that_delivers_nothing_newer_is_re_created(
    log: MemoryLog, engine: Engine
) -> None:
    job = await completed_job(log)
    log.lose(EVENT_STREAM, PROJECTOR_CONSUMER, 3)  # the last event vanishes: no later one
    # reveals the gap, and the consumer would redeliver it only after its AckWait (30 s)
    projection = ProjectionLoop(
        log.connect(), engine, JOBS, PROJECTOR_CONSUMER, batch_size=10, stall_limit=0.2
    )
    await follow_until(log, engine, projection, 3)

    assert projection.signals.serving.count == 2  # a second life, on a new consumer
    assert timeline(engine, job) == ["submitted", "started", "succeeded"]
    with Session(engine) as session:
        found = queries.projection_health(session)[jobs.NAME]
    assert found.lost_deliveries == 1
    assert found.last_problem is not None and "no delivery for 0.2 s" in found.last_problem


async def test_a_projector_dying_between_commit_and_ack_applies_nothing_twice(
    log: MemoryLog, settings: Settings, engine: Engine
) -> None:
    job = await completed_job(log)
    projector, connection = projector_on(log, settings)
    connection.kill_before("ack", "fq.job.>")

    running = asyncio.create_task(projector.run())
    await log.wait_until(lambda: not connection.alive, timeout=WAIT)  # died acking 1-3
    running.cancel()  # the process is gone (a live one would retry on its connection)
    with contextlib.suppress(asyncio.CancelledError):
        await running
    assert checkpoint(engine) == 3
    assert log.pending(EVENT_STREAM, PROJECTOR_CONSUMER) == {1: 1, 2: 1, 3: 1}

    other = await submit(log)
    await project_until(log, settings, engine, 4)  # its successor resumes after 3

    assert timeline(engine, job) == ["submitted", "started", "succeeded"]
    assert timeline(engine, other) == ["submitted"]


async def test_a_gap_found_while_the_receiver_is_bursts_ahead_is_refilled_too(
    log: MemoryLog, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver runs ahead of the applying loop by up to PIPELINE_DEPTH bursts. When the
    loop left on a gap with that queue full, the receiver, cancelled while putting its next
    burst, waited for ever to put its end marker: the projector stood still without a word
    (seen on the 3-node cluster after a node serving the projector was killed)."""
    for _ in range(10):
        await completed_job(log)
    connection = log.connect()
    reading = connection.read

    async def read_over_a_network(*args: Any, **kwargs: Any) -> StoredMessage | None:
        for _ in range(20):  # a round trip: the receiver fills the queue meanwhile
            await asyncio.sleep(0)
        return await reading(*args, **kwargs)

    monkeypatch.setattr(connection, "read", read_over_a_network)
    # One message per burst; the gap at 12 is met by a life whose receiver started ahead.
    log.lose(EVENT_STREAM, PROJECTOR_CONSUMER, 2, 12)
    projection = ProjectionLoop(connection, engine, JOBS, PROJECTOR_CONSUMER, batch_size=1)
    stopping = asyncio.Event()
    running = asyncio.create_task(projection.run(stopping))
    try:
        await log.wait_until(lambda: checkpoint(engine) >= 30, timeout=WAIT)
    finally:
        stopping.set()
        stopped, _ = await asyncio.wait([running], timeout=WAIT)
        running.cancel()

    assert stopped, "the projection did not stop"
    assert projection.signals.serving.count == 3  # a life after each gap, from the checkpoint


async def test_a_one_shot_catch_up_short_of_the_log_end_finishes(
    log: MemoryLog, tmp_path: Path
) -> None:
    """`fq projections verify` (rebuild, replay) stops at a sequence the log has gone past:
    its receiver has filled the pipeline with later bursts and waits to hand over one more
    when the last wanted batch is applied. Ending it must not wait on that full pipeline
    (it once did, for ever: the consumer, no longer pulled, vanished after 60 s)."""
    for _ in range(4):
        await completed_job(log)  # 12 events: many more one-event bursts than the pipeline
    settings = memory_settings(database_url=f"sqlite:///{tmp_path / 'fold.db'}", projector_batch=1)
    projector, _ = projector_on(log, settings)

    reached = await asyncio.wait_for(projector.catch_up(up_to=2), WAIT)

    assert reached == 2
    assert not [name for name in await log.backlogs(EVENT_STREAM) if "rebuild" in name]


async def test_a_one_shot_catch_up_to_sequences_the_log_no_longer_holds_ends(
    log: MemoryLog, tmp_path: Path
) -> None:
    """A rebuild (verify) up to a sequence whose messages were all removed (a purge, a
    ``max_age``): no consumer will ever deliver up to it. It once waited for ever, re-creating
    its consumer every 15 s; it ends where the log ends."""
    await completed_job(log)
    await log.purge("fq.job.>", stream=EVENT_STREAM)
    settings = memory_settings(database_url=f"sqlite:///{tmp_path / 'fold.db'}")
    projector, _ = projector_on(log, settings)

    reached = await asyncio.wait_for(projector.catch_up(up_to=3), WAIT)

    assert reached == 0


@pytest.mark.timeout(20)  # each life waits out a pull request (1 s) before it sees the stall
async def test_a_one_shot_run_whose_consumers_never_deliver_fails_with_why(
    log: MemoryLog, engine: Engine
) -> None:
    """However often its consumer is re-created, sequence 3 never arrives: a one-shot run
    gives up after a few lives that applied nothing, instead of re-creating it for ever."""
    await completed_job(log)
    log.withhold(EVENT_STREAM, "fq-rebuild-stuck", 3)
    once = ProjectionLoop(
        log.connect(), engine, JOBS, "fq-rebuild-stuck", batch_size=10, last_seq=3, stall_limit=0.05
    )

    with pytest.raises(NatsUnavailable, match="4 consumers in a row delivered nothing") as raised:
        await asyncio.wait_for(once.run(asyncio.Event()), 15)

    assert "after sequence 2" in str(raised.value)
    assert once.signals.serving.count == 4
    assert checkpoint(engine) == 2


async def test_a_slow_store_is_not_taken_for_a_stalled_consumer(
    log: MemoryLog, engine: Engine
) -> None:
    """While the store applies slowly the receiver waits, its pipeline full, to hand over
    what it received: that wait is the store's, not the consumer's silence. It once counted
    towards the stall limit: the projection re-created its consumer and recorded lost
    deliveries that never happened."""
    for _ in range(2):
        await completed_job(log)

    def slow_commit(applied: object) -> None:
        time.sleep(0.1)  # a commit that takes twice the stall limit (in the database thread)

    projection = ProjectionLoop(
        log.connect(), engine, JOBS, PROJECTOR_CONSUMER, batch_size=1, stall_limit=0.05,
        observe=slow_commit,
    )  # fmt: skip
    await follow_until(log, engine, projection, 6)

    assert projection.signals.serving.count == 1  # one life: the consumer was never re-created
    with Session(engine) as session:
        assert jobs.NAME not in queries.projection_health(session)


async def test_a_fatal_failure_ends_the_projector_even_if_the_other_loop_loses_its_cancel(
    log: MemoryLog, settings: Settings, engine: Engine
) -> None:
    """A store ahead of its log fails the jobs projection; the workers projection is stopped
    although it swallows the TaskGroup's cancel, as a nats-py request can on Python 3.11
    (``asyncio.wait_for`` returning a reply that landed in the same turn as the cancel)."""
    await submit(log)
    with Session(engine) as session:
        commit_at(session, jobs.NAME, 50, utcnow(), after=0)  # as if it had applied 50 events
    projector, connection = projector_on(log, settings)
    last_seq, in_flight, swallowed = connection.last_seq, asyncio.Event(), asyncio.Event()

    async def last_seq_losing_a_cancel(stream: str) -> int:
        if stream == EVENT_STREAM:
            await in_flight.wait()  # the jobs projection fails once the workers' request is out
        elif stream == WORKER_STREAM and not swallowed.is_set():
            in_flight.set()
            try:
                await asyncio.Event().wait()  # the request in flight when the cancel comes
            except asyncio.CancelledError:
                swallowed.set()  # lost, as wait_for loses it
        return await last_seq(stream)

    connection.last_seq = last_seq_losing_a_cancel  # type: ignore[method-assign]

    with pytest.raises(ConfigurationError, match="the stream ends at"):
        async with asyncio.timeout(5):  # without the fix: a TimeoutError, the projector runs on
            await projector.run()
    assert swallowed.is_set()


async def test_a_wedged_life_is_cancelled_and_the_next_resumes_from_the_checkpoint(
    log: MemoryLog, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A life that waits for ever on something (here its first commit never returns) while
    the stream holds newer events is cancelled after the wedge limit; the next life applies
    every event once from the checkpoint."""
    job = await completed_job(log)
    release, first = threading.Event(), threading.Event()
    apply = follow._apply

    def wedged_once(*args: Any) -> int:
        if not first.is_set():
            first.set()
            release.wait(timeout=WAIT)  # never returns in time: the life is wedged
            raise RuntimeError("the wedged commit gave up")  # after the test, harmlessly
        return apply(*args)

    monkeypatch.setattr(follow, "_apply", wedged_once)
    projection = ProjectionLoop(
        log.connect(), engine, JOBS, PROJECTOR_CONSUMER, batch_size=10, wedge_limit=0.3
    )
    await follow_until(log, engine, projection, 3, stopped=release.set)

    assert projection.signals.serving.count == 2  # a second life, after the wedge
    assert timeline(engine, job) == ["submitted", "started", "succeeded"]
    with Session(engine) as session:
        found = queries.projection_health(session)[jobs.NAME]
    assert found.last_problem is not None and "no progress for" in found.last_problem
