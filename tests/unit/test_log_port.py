"""The log port's contract (tests/support/log_contract.py) on the in-memory log, plus what
only the in-memory log offers tests: its clock, schedules that fire, sourcing, killed
connections and lost deliveries."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ferrisqueue.domain.events import Released, Scheduled, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import EVENT_STREAM, SCHEDULE_STREAM, timer_subject
from ferrisqueue.errors import NatsUnavailable
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.memlog import MemoryLog
from ferrisqueue.log.topology import ensure_topology
from ferrisqueue.settings import Settings
from scheduler.timers import timer_for
from tests.support.log_contract import CONSUMER, LogContract, submitted, take

pytestmark = pytest.mark.timeout(5)


@pytest.fixture
async def memory_log() -> MemoryLog:
    log = MemoryLog()
    await ensure_topology(log, Settings(_env_file=None))  # type: ignore[call-arg]
    return log


class TestMemoryLog(LogContract):
    quiet = 0.02  # nothing happens in the in-memory log unless the test does it

    @pytest.fixture
    def log(self, memory_log: MemoryLog) -> EventLog:
        return memory_log

    async def let_time_pass(self, log: EventLog, seconds: float) -> None:
        assert isinstance(log, MemoryLog)
        log.advance(seconds)


async def test_a_duplicate_is_stored_again_once_the_window_has_passed(
    memory_log: MemoryLog,
) -> None:
    event = submitted()
    first = await memory_log.append(event)

    memory_log.advance(121)

    assert await memory_log.append(event) > first


async def test_a_timer_fires_at_its_time_and_is_sourced_as_the_jobs_release(
    memory_log: MemoryLog,
) -> None:
    job = new_job_id()
    due = memory_log.now + timedelta(seconds=30)
    scheduled = Scheduled(job_id=job, queue="default", at=utcnow(), type="echo", run_at=due)
    timer = timer_for(scheduled)
    assert timer is not None
    await memory_log.publish(
        timer.subject, timer.body, stream=SCHEDULE_STREAM, headers=timer.headers()
    )

    memory_log.advance(29)
    assert await memory_log.history(job) == []

    memory_log.advance(1.1)
    (released,) = await memory_log.history(job)
    assert isinstance(released.event, Released) and released.event.attempt == 0
    assert memory_log.messages(SCHEDULE_STREAM, timer_subject("default", job)) == []


async def test_a_killed_connection_can_neither_publish_nor_settle_and_its_lease_runs_out(
    memory_log: MemoryLog,
) -> None:
    worker = memory_log.connect()
    seq = await memory_log.append(submitted(queue="q"))
    contract = TestMemoryLog()
    consumer = await contract.consume(worker, "q")
    (held,) = await take(consumer, 1)

    worker.kill()

    with pytest.raises(NatsUnavailable):
        await held.ack()
    with pytest.raises(NatsUnavailable):
        await worker.append(submitted())
    memory_log.advance(1.5)
    (again,) = await take(memory_log.consumer(EVENT_STREAM, CONSUMER), 1)
    assert (again.seq, again.deliveries) == (seq, 2)


async def test_kill_before_an_ack_fails_that_ack_and_keeps_what_was_stored(
    memory_log: MemoryLog,
) -> None:
    worker = memory_log.connect()
    await memory_log.append(submitted(queue="q"))
    consumer = await TestMemoryLog().consume(worker, "q")
    (held,) = await take(consumer, 1)
    worker.kill_before("ack")

    stored = await worker.append(submitted())
    with pytest.raises(NatsUnavailable):
        await held.ack()

    assert stored > 0 and not worker.alive
    assert memory_log.pending(EVENT_STREAM, CONSUMER) == {held.seq: 1}


async def test_a_lost_delivery_is_never_handed_over_but_an_ack_all_past_it_acks_it(
    memory_log: MemoryLog,
) -> None:
    seqs = [await memory_log.append(submitted(queue="q")) for _ in range(3)]
    consumer = await TestMemoryLog().consume(memory_log, "q", ack_policy="all")
    memory_log.lose(EVENT_STREAM, CONSUMER, seqs[1])

    got = await take(consumer, 2)
    await got[-1].ack()

    assert [d.seq for d in got] == [seqs[0], seqs[2]]
    assert memory_log.pending(EVENT_STREAM, CONSUMER) == {}
