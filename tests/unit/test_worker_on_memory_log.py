"""The worker (runner, executor, lease) on the in-memory log, including its crash windows:
what docs/architecture.md's "Worker" section promises, proven in milliseconds. The same
guarantees are proven on a real nats-server by tests/integration and tests/fault."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest

from ferrisqueue.domain.backoff import RetryPolicy
from ferrisqueue.domain.commands import decide_cancel
from ferrisqueue.domain.events import Canceled, CancelRequested, Dependent, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import DLQ_STREAM, EVENT_STREAM, dlq_subject, job_subject
from ferrisqueue.errors import Permanent
from ferrisqueue.log.eventlog import CommandResult
from ferrisqueue.log.memlog import MemoryLog
from ferrisqueue.log.topology import worker_consumer_config, worker_consumer_name
from tests.support.memory import (
    WAIT,
    kinds,
    memory_log,
    memory_settings,
    running_worker,
    submit,
    wait_for_kinds,
)
from worker.context import JobContext
from worker.executor import JobExecutor
from worker.lease import LeaseKeeper
from worker.registry import TaskRegistry

pytestmark = pytest.mark.timeout(10)

DISPATCH = worker_consumer_name("default")
TWO_QUEUES = memory_settings(worker_queues=["a", "b"])


class Tasks:
    """Handlers that count their runs; ``block`` waits for the test to open its gate."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.gate = asyncio.Event()
        self.blocked = asyncio.Event()
        self.registry = TaskRegistry()
        self.registry.task("echo")(self.echo)
        self.registry.task("block")(self.block)
        self.registry.task("refuse")(self.refuse)

    async def echo(self, ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        self.runs[ctx.job_id] += 1
        return payload

    async def block(self, ctx: JobContext, payload: dict[str, Any]) -> str:
        self.runs[ctx.job_id] += 1
        self.blocked.set()
        await self.gate.wait()
        return "done"

    async def refuse(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        self.runs[ctx.job_id] += 1
        raise Permanent("never")


async def cancel(log: MemoryLog, job: str) -> CommandResult[CancelRequested | Canceled]:
    """What ``POST /jobs/{id}/cancel`` does."""
    return await log.command(job, lambda state, _: decide_cancel(state, actor="test", now=utcnow()))


@pytest.fixture
async def log() -> MemoryLog:
    return await memory_log()


@pytest.fixture
def tasks() -> Tasks:
    return Tasks()


async def test_a_submitted_job_runs_once_and_its_message_is_acked(
    log: MemoryLog, tasks: Tasks
) -> None:
    job = await submit(log, payload={"n": 1})

    async with running_worker(log, tasks.registry):
        history = await wait_for_kinds(log, job, "submitted", "started", "succeeded")

    assert history == ["submitted", "started", "succeeded"]
    assert tasks.runs[job] == 1
    assert log.pending(EVENT_STREAM, DISPATCH) == {}


async def test_a_job_whose_worker_died_mid_run_runs_again_after_ack_wait(
    log: MemoryLog, tasks: Tasks
) -> None:
    job = await submit(log, "block")
    async with running_worker(log, tasks.registry) as first:
        await wait_for_kinds(log, job, "started")
        await first.kill()

    log.advance(29)  # its lease (AckWait 30 s) still holds it: delivered once, unacked
    assert log.pending(EVENT_STREAM, DISPATCH) == {1: 1}
    tasks.gate.set()
    async with running_worker(log, tasks.registry):
        log.advance(1.5)
        history = await wait_for_kinds(log, job, "succeeded")

    assert history == ["submitted", "started", "started", "succeeded"]
    assert tasks.runs[job] == 2
    assert log.pending(EVENT_STREAM, DISPATCH) == {}


async def test_a_worker_dying_after_the_outcome_before_the_ack_does_not_run_the_job_again(
    log: MemoryLog, tasks: Tasks
) -> None:
    job = await submit(log)
    async with running_worker(log, tasks.registry) as first:
        first.connection.kill_before("ack", job_subject("default", job, "submitted"))
        await wait_for_kinds(log, job, "succeeded")
        await log.wait_until(lambda: not first.connection.alive, timeout=3)
        await first.kill()
    assert log.pending(EVENT_STREAM, DISPATCH) != {}  # the outcome is stored, the ack is not

    async with running_worker(log, tasks.registry):
        log.advance(31)
        await log.wait_until(lambda: not log.pending(EVENT_STREAM, DISPATCH), timeout=3)

    assert tasks.runs[job] == 1  # the redelivery found the job completed and only acked
    assert await wait_for_kinds(log, job) == ["submitted", "started", "succeeded"]


async def test_a_job_submitted_twice_runs_once(log: MemoryLog, tasks: Tasks) -> None:
    job = await submit(log)
    log.advance(121)  # past the duplicate window: the second copy is stored
    again = await log.append((await log.history(job))[0].event)  # type: ignore[arg-type]
    assert again == 2

    async with running_worker(log, tasks.registry):
        await log.wait_until(lambda: not log.pending(EVENT_STREAM, DISPATCH), timeout=3)
        history = await wait_for_kinds(log, job, "succeeded")

    # The guarded `started` let one delivery start the job; the other saw it started.
    assert Counter(history) == {"submitted": 2, "started": 1, "succeeded": 1}
    assert tasks.runs[job] == 1


async def test_a_job_canceled_before_it_starts_is_never_run(log: MemoryLog, tasks: Tasks) -> None:
    job = await submit(log)
    canceled = await cancel(log, job)
    assert [e.kind.value for e in canceled.events] == ["cancel_requested", "canceled"]

    async with running_worker(log, tasks.registry):
        await log.wait_until(lambda: not log.pending(EVENT_STREAM, DISPATCH), timeout=3)

    assert tasks.runs[job] == 0
    assert await wait_for_kinds(log, job) == ["submitted", "cancel_requested", "canceled"]


async def test_an_undecodable_submission_is_dead_lettered_and_never_delivered_again(
    log: MemoryLog, tasks: Tasks
) -> None:
    job = new_job_id()
    subject = job_subject("default", job, "submitted")
    seq = await log.publish(subject, b"{not json", stream=EVENT_STREAM, headers={})

    async with running_worker(log, tasks.registry):
        await wait_for_kinds(log, job, "dead_lettered")
        await log.wait_until(lambda: not log.pending(EVENT_STREAM, DISPATCH), timeout=3)

    (copy,) = log.messages(DLQ_STREAM, dlq_subject("default", job))
    assert copy.data == b"{not json" and copy.headers["Fq-Stream-Seq"] == str(seq)
    assert log.pending(EVENT_STREAM, DISPATCH) == {}  # terminated: it never comes back


async def test_a_permanent_failure_is_dead_lettered_with_its_original_message(
    log: MemoryLog, tasks: Tasks
) -> None:
    job = await submit(log, "refuse")

    async with running_worker(log, tasks.registry):
        history = await wait_for_kinds(log, job, "failed", "dead_lettered")

    assert history == ["submitted", "started", "failed", "dead_lettered"]
    (copy,) = log.messages(DLQ_STREAM, dlq_subject("default", job))
    assert copy.data == log.messages(EVENT_STREAM, f"fq.job.*.{job}.submitted")[0].data
    assert copy.headers["Fq-Reason"].startswith("permanent error: never")


async def test_a_worker_dying_before_the_dead_letter_of_a_final_failure_finishes_it_later(
    log: MemoryLog, tasks: Tasks
) -> None:
    job = await submit(log, "refuse")
    async with running_worker(log, tasks.registry) as first:
        first.connection.kill_before("store", dlq_subject("default", job))
        await wait_for_kinds(log, job, "failed")
        await log.wait_until(lambda: not first.connection.alive, timeout=3)
        await first.kill()
    assert log.messages(DLQ_STREAM, dlq_subject("default", job)) == []

    async with running_worker(log, tasks.registry):
        log.advance(31)
        await wait_for_kinds(log, job, "dead_lettered")
        await log.wait_until(lambda: not log.pending(EVENT_STREAM, DISPATCH), timeout=3)

    assert tasks.runs[job] == 1  # finished the dead-lettering instead of running it again
    assert len(log.messages(DLQ_STREAM, dlq_subject("default", job))) == 1


async def test_a_running_job_is_canceled_when_its_cancel_is_stored(
    log: MemoryLog, tasks: Tasks
) -> None:
    job = await submit(log, "block")

    async with running_worker(log, tasks.registry, memory_settings()):
        await tasks.blocked.wait()
        await log.command(job, lambda state, _: decide_cancel(state, actor="test", now=utcnow()))
        history = await wait_for_kinds(log, job, "cancel_requested", "canceled")

    assert history == ["submitted", "started", "cancel_requested", "canceled"]


# An in-memory pull waits until something comes, holding the worker's free slots (on NATS it
# expires after 1 s): the two-queue tests give each queue a job before the worker starts, so
# every pull gets one and hands back the rest of its slots.


async def test_a_queue_whose_consumer_fails_starts_again_and_runs_its_jobs(
    tasks: Tasks, caplog: pytest.LogCaptureFixture
) -> None:
    log = await memory_log(TWO_QUEUES)
    first = [await submit(log, queue="a"), await submit(log, queue="b")]
    fast = RetryPolicy(base=0.01, cap=0.05)  # restarts in ms: the test waits less
    async with running_worker(log, tasks.registry, TWO_QUEUES, restart=fast) as running:
        for job in first:
            await wait_for_kinds(log, job, "succeeded")
        queue_a = running.worker.loops["a"]
        await log.delete_consumer(EVENT_STREAM, worker_consumer_name("a"))
        other = await submit(log, queue="b")  # the next pull from queue a fails
        await queue_a.signals.loop_failures.reached(1, timeout=WAIT)
        await queue_a.signals.serving.reached(2, timeout=WAIT)  # its consumer made again
        again = await submit(log, queue="a")
        await wait_for_kinds(log, again, "succeeded")
        await wait_for_kinds(log, other, "succeeded")

    # The new consumer delivered queue a's first job again: found finished, acked, not run.
    assert tasks.runs == dict.fromkeys([*first, other, again], 1)
    assert running.worker.loops["b"].signals.loop_failures.count == 0
    failure = next(r for r in caplog.records if "in a row" in r.getMessage())
    assert failure.levelno == logging.WARNING  # NATS trouble is expected: no traceback
    assert "queue a (consumer fq-worker-a) failed" in failure.getMessage()
    assert "fq-worker-a on FQ_EVENTS does not exist" in failure.getMessage()


async def test_a_failing_queue_neither_stops_the_other_queues_nor_delays_a_stop(
    tasks: Tasks,
) -> None:
    log = await memory_log(TWO_QUEUES)
    primer = await submit(log, queue="a")
    running_job = await submit(log, "block", queue="b")
    slow = RetryPolicy(base=60, cap=60)  # queue a stays down for the rest of the test
    async with running_worker(log, tasks.registry, TWO_QUEUES, restart=slow) as running:
        await wait_for_kinds(log, primer, "succeeded")
        await wait_for_kinds(log, running_job, "started")
        queue_a = running.worker.loops["a"]
        await log.delete_consumer(EVENT_STREAM, worker_consumer_name("a"))
        stranded = await submit(log, queue="a")
        nudge = await submit(log, queue="b")  # the next pull from queue a fails
        await queue_a.signals.loop_failures.reached(1, timeout=WAIT)
        later = await submit(log, queue="b")
        await wait_for_kinds(log, later, "succeeded")
        assert queue_a.signals.serving.count == 1  # still waiting to start again

        running.worker.stop()  # cuts the backoff short; the running job gets its grace
        tasks.gate.set()
        async with asyncio.timeout(WAIT):
            await running.stop()

    assert await wait_for_kinds(log, running_job) == ["submitted", "started", "succeeded"]
    assert tasks.runs == dict.fromkeys([primer, running_job, nudge, later], 1)
    assert await wait_for_kinds(log, stranded) == ["submitted"]
    assert queue_a.signals.loop_failures.count == 1
    assert queue_a.signals.stopped.is_set()


async def test_a_child_noted_during_the_run_makes_the_worker_announce_the_end(
    log: MemoryLog, tasks: Tasks
) -> None:
    job = await submit(log, "block")
    async with running_worker(log, tasks.registry):
        await tasks.blocked.wait()
        # The scheduler notes a child on the running job: the outcome's guarded append is
        # refused once, the worker reads the job again and learns of the child.
        await log.append(Dependent(job_id=job, queue="default", child="child-1", at=utcnow()))
        tasks.gate.set()
        history = await wait_for_kinds(log, job, "succeeded", "settled")

    assert history == ["submitted", "started", "dependent", "succeeded", "settled"]


async def test_a_child_noted_before_the_start_is_announced_and_a_job_without_one_is_not(
    log: MemoryLog, tasks: Tasks
) -> None:
    parent, alone = await submit(log), await submit(log)
    await log.append(Dependent(job_id=parent, queue="default", child="child-1", at=utcnow()))
    async with running_worker(log, tasks.registry):
        assert await wait_for_kinds(log, parent, "settled") == [
            "submitted",
            "dependent",
            "started",
            "succeeded",
            "settled",
        ]
        assert await wait_for_kinds(log, alone, "succeeded") == [
            "submitted",
            "started",
            "succeeded",
        ]


async def test_a_cancel_heard_just_before_the_start_cancels_the_job_as_it_starts(
    log: MemoryLog, tasks: Tasks
) -> None:
    """A job's ``started`` and its ``cancel_requested`` can reach a worker in one read, the
    notice handled first: the executor remembers the request and cancels as it starts."""
    job = await submit(log, "block")
    settings = memory_settings()
    connection = log.connect()
    config = worker_consumer_config("default", settings)
    await connection.ensure_consumer(EVENT_STREAM, config)
    puller = connection.consumer(EVENT_STREAM, config["durable_name"])
    await puller.start()

    async def one() -> int:
        return 1

    bursts = puller.bursts(asyncio.Event(), request_size=one)
    (msg,) = await anext(bursts)
    await bursts.aclose()
    await puller.stop()
    executor = JobExecutor(
        connection,
        tasks.registry,
        worker_id="w1",
        policies=settings.policy,
        leases=LeaseKeeper(),
    )

    assert executor.cancel(job) is False  # not running here (yet): remembered
    await executor.execute(msg)

    assert kinds(log, job) == ["submitted", "started", "canceled"]
    assert tasks.runs[job] == 0
