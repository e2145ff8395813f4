"""The dead-letter router (scheduler/dead_letters.py) on the in-memory log, including its
crash window: a job whose workers keep dying reaches MaxDeliver, the consumer's advisory is
captured in FQ_ADVISORIES, and the router copies the job to FQ_DLQ and marks it
dead-lettered, once, even when it dies half way; a malformed advisory is parked and the
router goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ferrisqueue.domain.subjects import ADVISORY_STREAM, DLQ_STREAM, EVENT_STREAM, dlq_subject
from ferrisqueue.log.memlog import ADVISORY_PREFIX, MemoryLog
from ferrisqueue.log.topology import worker_consumer_name
from scheduler.dead_letters import ROUTER_CONSUMER, DeadLetterRouter
from tests.support.log_contract import take
from tests.support.memory import (
    WAIT,
    memory_log,
    memory_settings,
    serving,
    submit,
    wait_for_kinds,
)

pytestmark = pytest.mark.timeout(10)

DISPATCH = worker_consumer_name("default")
ADVISORY = f"{ADVISORY_PREFIX}.{EVENT_STREAM}.{DISPATCH}"


@pytest.fixture
async def log() -> MemoryLog:
    # MaxDeliver 2: the job is given up on after its second worker dies (AckWait 30 s, 60 s).
    return await memory_log(memory_settings(max_deliver=2))


async def given_up(log: MemoryLog) -> str:
    """A job both of whose deliveries went to workers that died holding it."""
    job = await submit(log)
    dispatch = log.consumer(EVENT_STREAM, DISPATCH)
    assert [d.deliveries for d in await take(dispatch, 1)] == [1]
    log.advance(30)
    assert [d.deliveries for d in await take(dispatch, 1)] == [2]
    log.advance(60)
    return job


@pytest.fixture
async def router(log: MemoryLog) -> AsyncIterator[DeadLetterRouter]:
    async with serving(DeadLetterRouter(log.connect())) as router:
        yield router


async def test_a_job_whose_workers_keep_dying_is_dead_lettered_after_max_deliver(
    log: MemoryLog, router: DeadLetterRouter
) -> None:
    job = await given_up(log)

    history = await wait_for_kinds(log, job, "dead_lettered")
    await router.signals.handled.reached(1, timeout=WAIT)

    assert history == ["submitted", "dead_lettered"]
    (copy,) = log.messages(DLQ_STREAM, dlq_subject("default", job))
    assert copy.headers["Fq-Deliveries"] == "2" and copy.headers["Fq-Stream-Seq"] == "1"
    assert log.pending(EVENT_STREAM, DISPATCH) == {}
    assert log.pending(ADVISORY_STREAM, ROUTER_CONSUMER) == {}


async def test_a_malformed_advisory_is_parked_and_the_next_one_is_routed(
    log: MemoryLog, router: DeadLetterRouter
) -> None:
    await log.publish(ADVISORY, b"{not json", stream=ADVISORY_STREAM, headers={})
    await router.signals.parked.reached(1, timeout=WAIT)

    job = await given_up(log)

    await wait_for_kinds(log, job, "dead_lettered")
    assert log.messages(ADVISORY_STREAM)[0].data == b"{not json"  # parked: kept, not retried
    assert log.pending(ADVISORY_STREAM, ROUTER_CONSUMER) == {}


async def test_a_router_dying_between_the_copy_and_the_event_does_both_once(
    log: MemoryLog,
) -> None:
    job = await given_up(log)
    connection = log.connect()
    connection.kill_before("store", f"fq.job.*.{job}.dead_lettered")
    dying = DeadLetterRouter(connection)
    dying.start()
    await log.wait_until(lambda: not connection.alive, timeout=WAIT)
    await dying.stop()
    assert len(log.messages(DLQ_STREAM, dlq_subject("default", job))) == 1
    assert await wait_for_kinds(log, job) == ["submitted"]

    successor = DeadLetterRouter(log.connect())
    successor.start()
    log.advance(30)  # the router's AckWait
    await successor.signals.handled.reached(1, timeout=WAIT)
    await successor.stop()

    assert await wait_for_kinds(log, job) == ["submitted", "dead_lettered"]
    assert len(log.messages(DLQ_STREAM, dlq_subject("default", job))) == 1  # deduplicated
