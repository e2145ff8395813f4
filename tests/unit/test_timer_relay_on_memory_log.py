"""The timer relay (scheduler/timers.py) on the in-memory log, including its crash window:
a waiting job gets one server timer, the fired timer becomes its ``released`` event and a
worker runs it; a cancel removes the timer; a relay dying between arming and acking arms
nothing twice. The in-memory log fires ``@at`` schedules and sources them into FQ_EVENTS as
the server does, so the whole path runs in milliseconds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from ferrisqueue.domain.commands import decide_cancel
from ferrisqueue.domain.events import Scheduled, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import EVENT_STREAM, SCHEDULE_STREAM, timer_subject
from ferrisqueue.log.memlog import MemoryLog
from scheduler.timers import TIMER_CONSUMER, TimerRelay
from tests.support.memory import WAIT, memory_log, running_worker, serving, wait_for_kinds
from worker.context import JobContext
from worker.registry import TaskRegistry

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
async def log() -> MemoryLog:
    return await memory_log()


@pytest.fixture
async def relay(log: MemoryLog) -> AsyncIterator[TimerRelay]:
    async with serving(TimerRelay(log.connect())) as relay:
        yield relay


async def schedule(log: MemoryLog, after: float) -> str:
    job = new_job_id()
    run_at = log.now + timedelta(seconds=after)
    await log.append(
        Scheduled(job_id=job, queue="default", at=utcnow(), type="echo", run_at=run_at)
    )
    return job


def timers(log: MemoryLog, job: str) -> list[Any]:
    return log.messages(SCHEDULE_STREAM, timer_subject("default", job))


def echo_registry() -> TaskRegistry:
    registry = TaskRegistry()

    async def echo(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    registry.task("echo")(echo)
    return registry


async def test_a_scheduled_job_is_released_at_its_time_and_then_runs(
    log: MemoryLog, relay: TimerRelay
) -> None:
    job = await schedule(log, 60)
    await relay.signals.handled.reached(1, timeout=WAIT)
    (timer,) = timers(log, job)
    assert timer.headers["Nats-Msg-Id"] == f"{job}:timer:0"

    async with running_worker(log, echo_registry()):
        log.advance(59)
        assert await wait_for_kinds(log, job) == ["scheduled"]  # not a moment early
        log.advance(1.1)
        history = await wait_for_kinds(log, job, "released", "started", "succeeded")

    assert history == ["scheduled", "released", "started", "succeeded"]
    assert timers(log, job) == []


async def test_a_failed_attempt_with_retry_at_is_run_again_when_its_timer_fires(
    log: MemoryLog, relay: TimerRelay
) -> None:
    job = new_job_id()
    failures = iter([RuntimeError("flaky")])
    registry = TaskRegistry()

    async def flaky(ctx: JobContext, payload: dict[str, Any]) -> str:
        if (failure := next(failures, None)) is not None:
            raise failure
        return "ok"

    registry.task("flaky")(flaky)
    await log.append(
        Scheduled(job_id=job, queue="default", at=utcnow(), type="flaky", run_at=log.now)
    )
    async with running_worker(log, registry):
        await relay.signals.handled.reached(1, timeout=WAIT)
        log.advance(0.01)
        await wait_for_kinds(log, job, "failed")
        await relay.signals.handled.reached(2, timeout=WAIT)
        log.advance(60)  # past any retry_at (base 1 s)
        history = await wait_for_kinds(log, job, "failed", "released", "succeeded")

    assert history == [
        "scheduled", "released", "started", "failed", "released", "started", "succeeded"
    ]  # fmt: skip


async def test_a_canceled_job_loses_its_timer_and_is_never_released(
    log: MemoryLog, relay: TimerRelay
) -> None:
    job = await schedule(log, 60)
    await relay.signals.handled.reached(1, timeout=WAIT)
    assert len(timers(log, job)) == 1

    await log.command(job, lambda state, _: decide_cancel(state, actor="test", now=utcnow()))
    await relay.signals.handled.reached(2, timeout=WAIT)
    log.advance(120)

    assert timers(log, job) == []
    assert await wait_for_kinds(log, job) == ["scheduled", "cancel_requested", "canceled"]


async def test_a_relay_dying_after_arming_before_the_ack_arms_one_timer(log: MemoryLog) -> None:
    job = await schedule(log, 60)
    connection = log.connect()
    connection.kill_before("ack")
    dying = TimerRelay(connection)
    dying.start()
    await log.wait_until(lambda: len(timers(log, job)) == 1, timeout=WAIT)
    await dying.stop()
    assert log.pending(EVENT_STREAM, TIMER_CONSUMER) == {1: 1}  # armed, never acked

    successor = TimerRelay(log.connect())
    successor.start()
    log.advance(5.1)  # the relay's AckWait
    await successor.signals.handled.reached(1, timeout=WAIT)
    await successor.stop()

    assert len(timers(log, job)) == 1  # the repeat had the same Nats-Msg-Id: dropped
    assert log.pending(EVENT_STREAM, TIMER_CONSUMER) == {}
    log.advance(60)
    assert await wait_for_kinds(log, job) == ["scheduled", "released"]
