"""A worker SIGKILLed while prioritised jobs run: the jobs it held come back after AckWait
through their own lane's consumer (``fq-lane9-default``, not the default one) and finish on
the other worker; nothing is lost, nothing else runs twice, and the read store equals a fresh
fold of the log."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.states import JobStatus
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.fault.system import consuming, starts, unfinished_on
from tests.support.history import History, verify

pytestmark = pytest.mark.fault

URGENT = 12
ROUTINE = 24
URGENT_JOB = {"type": "sleep", "payload": {"seconds": 1.0}, "priority": 9}
ROUTINE_JOB = {"type": "sleep", "payload": {"seconds": 0.2}, "priority": 0}


@pytest.mark.timeout(60)
async def test_a_killed_workers_prioritised_jobs_come_back_in_their_lane_and_finish(
    start: StartService, nc: Client, producer: Producer, history: History, store: Engine
) -> None:
    start("projections")
    doomed = start("worker", FQ_WORKER_ID="doomed", FQ_WORKER_CONCURRENCY="6")
    start("worker", FQ_WORKER_ID="rescuer", FQ_WORKER_CONCURRENCY="6")
    await consuming(nc, waiting=2)
    for n in range(ROUTINE):
        await producer.submit(f"routine-{n}", ROUTINE_JOB)
    urgent = {(await producer.submit(f"urgent-{n}", URGENT_JOB)).job_id for n in range(URGENT)}
    # It dies while it runs urgent jobs (a second each), pulled ahead of the routine ones.
    await starts(
        nc, lambda bodies: any(b["worker"] == "doomed" and b["job_id"] in urgent for b in bodies)
    )

    doomed.kill()
    history.worker_gone("doomed")
    verdict = await verify(nc, history, store)

    verdict.assert_ok()
    assert verdict.observed is not None
    rescued = {
        job_id: trace
        for job_id, trace in verdict.observed.jobs.items()
        if unfinished_on(trace, "doomed") is not None
    }
    urgent_rescued = [t for t in rescued.values() if t.creation and t.creation.priority == 9]
    assert urgent_rescued, "the kill hit no running priority-9 job"
    for trace in rescued.values():
        state = trace.state
        assert state is not None and state.status is JobStatus.COMPLETED
        assert (trace.starts[-1].attempt, trace.starts[-1].worker) == (2, "rescuer")
    assert verdict.runs_per_job == {1: URGENT + ROUTINE - len(rescued), 2: len(rescued)}
    assert verdict.outcomes == {"completed": URGENT + ROUTINE}
