"""A job that runs for several AckWaits keeps its lease through heartbeats (``in_progress``
every AckWait/3): it is never delivered again while its worker lives."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.fault.system import consuming, drained
from tests.support.history import History, verify

pytestmark = pytest.mark.fault

ACK_WAIT = 1.0
JOBS = 20
LONG = {"type": "sleep", "payload": {"seconds": 3.5 * ACK_WAIT, "steps": 2}}


@pytest.mark.timeout(40)
async def test_a_job_longer_than_ack_wait_keeps_its_lease_and_runs_once(
    start: StartService, nc: Client, producer: Producer, history: History, store: Engine
) -> None:
    start("projections")
    for name in ("w1", "w2"):
        start("worker", FQ_WORKER_ID=name, FQ_ACK_WAIT=str(ACK_WAIT))
    await consuming(nc, waiting=2)

    for n in range(JOBS):
        await producer.submit(f"long-{n}", LONG)
    verdict = await verify(nc, history, store)

    # No worker died, so any second start would be an unexplained rerun.
    verdict.assert_ok()
    assert verdict.runs_per_job == {1: JOBS}
    assert verdict.observed is not None
    for trace in verdict.observed.jobs.values():
        [started] = trace.starts
        assert started.attempt == 1
        state = trace.state
        assert state is not None and state.attempts == 1
        assert (state.finished_at - started.at).total_seconds() >= 3 * ACK_WAIT  # type: ignore[operator]
    info = await drained(nc)
    assert info.config.ack_wait == ACK_WAIT
    assert info.num_redelivered == 0
