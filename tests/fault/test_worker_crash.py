"""A worker SIGKILLed mid-job: its jobs come back after AckWait and finish on another worker
as attempt 2; nothing is lost and nothing else runs twice."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.events import utcnow
from ferrisqueue.domain.states import JobStatus
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.fault.conftest import FAULT_ACK_WAIT
from tests.fault.system import by, consuming, starts, unfinished_on
from tests.support.history import History, verify

pytestmark = pytest.mark.fault

JOBS = 40
JOB = {"type": "sleep", "payload": {"seconds": 1.0}}


@pytest.mark.timeout(50)
async def test_a_killed_workers_jobs_come_back_after_ack_wait_as_attempt_2(
    start: StartService, nc: Client, producer: Producer, history: History, store: Engine
) -> None:
    start("projections")
    doomed = start("worker", FQ_WORKER_ID="doomed", FQ_WORKER_CONCURRENCY="8")
    start("worker", FQ_WORKER_ID="rescuer", FQ_WORKER_CONCURRENCY="16")
    await consuming(nc, waiting=2)
    for n in range(JOBS):
        await producer.submit(f"crash-{n}", JOB)
    await starts(nc, by("doomed", 8))  # its eight slots are busy: it dies mid-job

    doomed.kill()
    killed_at = utcnow()
    history.worker_gone("doomed")
    verdict = await verify(nc, history, store)

    verdict.assert_ok()
    assert verdict.observed is not None
    rescued = {
        job_id: first
        for job_id, trace in verdict.observed.jobs.items()
        if (first := unfinished_on(trace, "doomed")) is not None
    }
    assert rescued, "the kill hit no running job"
    for job_id, first in rescued.items():
        trace = verdict.observed.jobs[job_id]
        second = trace.starts[-1]
        assert (first.attempt, second.attempt, second.worker) == (1, 2, "rescuer")
        # Its lease was renewed every AckWait/3 until the kill, so it came back between
        # 2/3 AckWait and AckWait after it (plus the rescuer's pull and a loaded machine).
        back_after = (second.at - killed_at).total_seconds()
        assert FAULT_ACK_WAIT / 2 <= back_after <= FAULT_ACK_WAIT + 5, back_after
        state = trace.state
        assert state is not None and state.status is JobStatus.COMPLETED
        assert state.attempts == 2 and state.worker == "rescuer"
    assert verdict.runs_per_job == {1: JOBS - len(rescued), 2: len(rescued)}
    assert verdict.outcomes == {"completed": JOBS}
