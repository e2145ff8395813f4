"""SIGTERM: the worker stops fetching, lets its running jobs finish within the grace period
and exits 0; with a grace too short for them, it hands them back (nak) and another worker
runs them at once, long before their AckWait would have run out."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.events import utcnow
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.fault.system import by, consuming, starts
from tests.support.history import History, verify

pytestmark = pytest.mark.fault

LONG = {"type": "sleep", "payload": {"seconds": 2.0}}
SHORT = {"type": "sleep", "payload": {"seconds": 0.1}}


@pytest.mark.timeout(45)
async def test_sigterm_finishes_running_jobs_within_the_grace_and_takes_no_new_ones(
    start: StartService, nc: Client, producer: Producer, history: History, store: Engine
) -> None:
    start("projections")
    leaving = start("worker", FQ_WORKER_ID="leaving", FQ_SHUTDOWN_GRACE="10")
    await consuming(nc, waiting=1)
    for n in range(4):
        await producer.submit(f"long-{n}", LONG)
    await starts(nc, by("leaving", 4))
    start("worker", FQ_WORKER_ID="staying")
    await consuming(nc, waiting=2)  # both pull: `leaving` has free slots too

    leaving.process.send_signal(signal.SIGTERM)
    signalled = utcnow()
    clock = time.monotonic()
    for n in range(20):  # submitted after the signal: only `staying` may run them
        await producer.submit(f"after-{n}", SHORT)
    code = await asyncio.to_thread(leaving.process.wait, 15)
    exited_after = time.monotonic() - clock
    verdict = await verify(nc, history, store)

    assert code == 0, leaving.log()
    # Its jobs had at most 2 s left, and an outstanding pull request runs out within 2 s:
    # it exits as soon as its jobs are done, not at the end of its 10 s grace.
    assert exited_after < 6, exited_after
    verdict.assert_ok()  # `leaving` is not gone: no job of it may run twice
    assert verdict.runs_per_job == {1: 24}
    assert verdict.observed is not None
    jobs = verdict.observed.jobs
    ran_on = {op.op_id: jobs[op.job_id].starts[0] for op in history.ops.values() if op.job_id}
    assert {ran_on[f"long-{n}"].worker for n in range(4)} == {"leaving"}
    late = [s for op, s in ran_on.items() if s.worker == "leaving" and s.at > signalled]
    assert late == [], "the stopping worker still took jobs"


@pytest.mark.timeout(45)
async def test_sigterm_with_a_short_grace_hands_jobs_back_to_run_before_ack_wait(
    start: StartService, nc: Client, producer: Producer, history: History, store: Engine
) -> None:
    ack_wait = 20.0  # long: a job that waited for it would blow the bound asserted below
    lease = {"FQ_ACK_WAIT": str(ack_wait), "FQ_SHUTDOWN_GRACE": "0.5"}
    start("projections")
    leaving = start("worker", FQ_WORKER_ID="leaving", FQ_WORKER_CONCURRENCY="4", **lease)
    await consuming(nc, waiting=1)
    for n in range(4):
        await producer.submit(f"long-{n}", LONG)
    await starts(nc, by("leaving", 4))  # all four of its slots busy
    start("worker", FQ_WORKER_ID="staying", **lease)
    await consuming(nc, waiting=1)  # `staying`'s pull; `leaving` has no free slot

    leaving.process.send_signal(signal.SIGTERM)
    signalled = utcnow()
    history.worker_gone("leaving")
    code = await asyncio.to_thread(leaving.process.wait, 15)
    for n in range(20):
        await producer.submit(f"more-{n}", SHORT)
    verdict = await verify(nc, history, store)

    assert code == 0, leaving.log()
    verdict.assert_ok()
    assert verdict.observed is not None
    jobs = verdict.observed.jobs
    for n in range(4):
        trace = jobs[history.ops[f"long-{n}"].job_id or ""]
        first, second = trace.starts
        assert (first.worker, first.attempt) == ("leaving", 1)
        assert (second.worker, second.attempt) == ("staying", 2)
        handed_back_in = (second.at - signalled).total_seconds()
        assert handed_back_in < ack_wait / 4, handed_back_in
        assert trace.state is not None and trace.state.status == "completed"
    assert verdict.runs_per_job == {1: 20, 2: 4}
