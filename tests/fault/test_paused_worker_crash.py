"""A worker SIGKILLed mid-job while its queue is paused: the killed worker's jobs do not come
back while the queue is paused, even once their AckWait has long passed (the surviving
worker holds the queue and pulls nothing); after the resume every job runs exactly once, the
killed ones as attempt 2, and the read store equals the log's fold.

That nothing starts while paused is observed for as long as a control job on another queue
takes to run on the surviving worker: longer than AckWait after the kill, so a leaky pause
would have handed the killed worker's jobs out again by then."""

from __future__ import annotations

import httpx
import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.events import utcnow
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.fault.conftest import FAULT_ACK_WAIT
from tests.fault.system import by, starts, unfinished_on
from tests.support.history import History, verify
from tests.support.procs import ServiceProcess
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.fault

QUEUE, CONTROL = "work", "ctl"
JOBS = 8
JOB = {"type": "sleep", "queue": QUEUE, "payload": {"seconds": 5.0}}
"""Long enough to be still running when the pause has been seen and the worker is killed."""


async def _holding(worker: ServiceProcess) -> None:
    """Wait until ``worker`` logs that it holds the paused queue (pulls nothing from it)."""

    async def held() -> bool:
        assert worker.alive(), worker.log()
        return any(
            f"queue {QUEUE} paused" in line and "holding" in line
            for line in worker.log().splitlines()
        )

    await wait_until(held, bool, timeout=20, what=f"the worker holding {QUEUE}")


@pytest.mark.timeout(90)
async def test_a_killed_workers_jobs_wait_for_the_resume_and_then_run_once(
    start: StartService,
    nc: Client,
    gateway: httpx.AsyncClient,
    producer: Producer,
    history: History,
    store: Engine,
) -> None:
    start("projections")
    queues = f"{QUEUE},{CONTROL}"
    doomed = start(
        "worker", FQ_WORKER_ID="doomed", FQ_WORKER_QUEUES=queues, FQ_WORKER_CONCURRENCY="4"
    )
    for n in range(JOBS):
        await producer.submit(f"paused-{n}", JOB)
    await starts(nc, by("doomed", 4))  # its slots are full; the other four wait
    # Slots to spare: a worker with every slot busy waits for one before it reaches the
    # paused queue's gate (and says it holds the queue), so the survivor must have some free.
    survivor = start(
        "worker", FQ_WORKER_ID="survivor", FQ_WORKER_QUEUES=queues, FQ_WORKER_CONCURRENCY="8"
    )
    await starts(nc, by("survivor", JOBS - 4))

    answer = await gateway.post(f"/queues/{QUEUE}/pause", json={"reason": "fault test"})
    assert answer.status_code == 200, answer.text
    await _holding(survivor)
    held_at = utcnow()
    doomed.kill()  # mid-job: its jobs' leases run out while the queue is paused
    history.worker_gone("doomed")
    # Runs on the survivor for longer than the killed worker's leases have left to live.
    await producer.submit(
        "control", {"type": "sleep", "queue": CONTROL, "payload": {"seconds": FAULT_ACK_WAIT + 1}}
    )
    await collect_events(
        nc, f"fq.job.{CONTROL}.*.succeeded", until=lambda bodies: bool(bodies), timeout=30
    )
    resumed_at = utcnow()
    answer = await gateway.post(f"/queues/{QUEUE}/resume", json={})
    assert answer.status_code == 200, answer.text
    verdict = await verify(nc, history, store)

    verdict.assert_ok()
    assert verdict.observed is not None
    traces = [t for t in verdict.observed.jobs.values() if t.creation and t.creation.queue == QUEUE]
    assert len(traces) == JOBS
    while_paused = [s for t in traces for s in t.starts if held_at < s.at < resumed_at]
    assert while_paused == [], while_paused
    rescued = [t for t in traces if unfinished_on(t, "doomed") is not None]
    assert rescued, "the kill hit no running job"
    for trace in rescued:
        second = trace.starts[-1]
        assert (second.attempt, second.worker) == (2, "survivor")
        assert second.at >= resumed_at, (second.at, resumed_at)
        assert (second.at - held_at).total_seconds() > FAULT_ACK_WAIT  # its lease had expired
