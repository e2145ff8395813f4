"""A worker SIGKILLed while a parent job runs: the parent comes back after AckWait as attempt
2 on another worker, and only its success releases the waiting children, each run once; the
live read store equals a fresh fold of the log."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.events import Released, Succeeded
from ferrisqueue.domain.states import JobStatus
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.fault.system import by, consuming, starts
from tests.support.history import History, verify

pytestmark = pytest.mark.fault


@pytest.mark.timeout(60)
async def test_children_run_once_after_the_parents_second_attempt_succeeds(
    start: StartService, nc: Client, producer: Producer, history: History, store: Engine
) -> None:
    start("projections")
    start("scheduler")
    doomed = start("worker", FQ_WORKER_ID="doomed", FQ_WORKER_CONCURRENCY="1")
    await consuming(nc, waiting=1)
    parent = await producer.submit("parent", {"type": "sleep", "payload": {"seconds": 2.0}})
    assert parent.job_id is not None
    # Fan-out and fan-in: two children of the parent, a grandchild of both.
    left = await producer.submit("left", {"type": "echo", "depends_on": [parent.job_id]})
    right = await producer.submit("right", {"type": "echo", "depends_on": [parent.job_id]})
    assert left.job_id is not None and right.job_id is not None
    both = [left.job_id, right.job_id]
    grandchild = await producer.submit("grandchild", {"type": "echo", "depends_on": both})
    await starts(nc, by("doomed", 1))  # the parent runs on the doomed worker

    start("worker", FQ_WORKER_ID="rescuer")
    doomed.kill()
    history.worker_gone("doomed")
    verdict = await verify(nc, history, store)

    verdict.assert_ok()  # nothing lost or duplicated; the read store equals the log's fold
    assert verdict.observed is not None
    jobs = verdict.observed.jobs
    trace = jobs[parent.job_id]
    assert [(s.attempt, s.worker) for s in trace.starts] == [(1, "doomed"), (2, "rescuer")]
    (parent_done,) = [m.event for m in trace.messages if isinstance(m.event, Succeeded)]
    assert parent_done.attempt == 2
    for child in (*both, grandchild.job_id):
        assert child is not None
        child_trace = jobs[child]
        state = child_trace.state
        assert state is not None and state.status is JobStatus.COMPLETED
        assert len(child_trace.starts) == 1, child_trace.kinds()
        releases = [m.event for m in child_trace.messages if isinstance(m.event, Released)]
        assert [r.actor for r in releases] == ["scheduler"]
        assert parent_done.at <= releases[0].at <= child_trace.starts[0].at
    grand_start = jobs[grandchild.job_id].starts[0].at
    for child in both:
        (done,) = [m.event for m in jobs[child].messages if isinstance(m.event, Succeeded)]
        assert done.at <= grand_start
    assert verdict.outcomes == {"completed": 4}
