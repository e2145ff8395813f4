"""Cancellation under load: a canceled pending job never runs, a running one is cancelled
cooperatively and ends ``canceled``, a finished one answers 409; the jobs around them are
not disturbed."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.events import Succeeded
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.fault.system import starts
from tests.support.history import History, verify

pytestmark = pytest.mark.fault

PENDING = 20
RUNNING = 5
FINISHED = 5
QUICK = {"type": "sleep", "payload": {"seconds": 0.05}}
ENDLESS = {"type": "sleep", "payload": {"seconds": 60, "steps": 120}}


@pytest.mark.timeout(45)
async def test_pending_jobs_never_run_running_ones_stop_and_finished_ones_are_409(
    start: StartService,
    nc: Client,
    gateway: httpx.AsyncClient,
    producer: Producer,
    history: History,
    store: Engine,
) -> None:
    start("projections")
    # No worker yet: every job below is pending; every other one is canceled.
    for n in range(PENDING):
        await producer.submit(
            f"pending-{n}", QUICK, expect=("canceled",) if n % 2 else ("completed",)
        )
    canceled_pending = [history.ops[f"pending-{n}"].job_id for n in range(1, PENDING, 2)]
    answers = [await gateway.post(f"/jobs/{job_id}/cancel") for job_id in canceled_pending]
    start("worker", FQ_WORKER_ID="w1")
    start("worker", FQ_WORKER_ID="w2")

    for n in range(RUNNING):
        await producer.submit(f"running-{n}", ENDLESS, expect=("canceled",))
    running = {history.ops[f"running-{n}"].job_id for n in range(RUNNING)}
    await starts(nc, lambda bodies: {b["job_id"] for b in bodies} >= running)
    stops = await asyncio.gather(*(gateway.post(f"/jobs/{job_id}/cancel") for job_id in running))
    for n in range(FINISHED):
        await producer.submit(f"finished-{n}", QUICK)
    verdict = await verify(nc, history, store)
    late = [
        await gateway.post(f"/jobs/{history.ops[f'finished-{n}'].job_id}/cancel")
        for n in range(FINISHED)
    ]

    verdict.assert_ok()
    assert {(a.status_code, a.json()["status"]) for a in answers} == {(202, "canceled")}
    assert {(a.status_code, a.json()["cancel_requested"]) for a in stops} == {(202, True)}
    assert {a.status_code for a in late} == {409}
    assert verdict.observed is not None
    jobs = verdict.observed.jobs
    for job_id in canceled_pending:
        assert jobs[job_id or ""].starts == [], "a canceled pending job ran"
    for job_id in running:
        trace = jobs[job_id or ""]
        assert trace.kinds()[-1] == "canceled"
        assert not any(isinstance(m.event, Succeeded) for m in trace.messages)
    assert verdict.outcomes == {
        "canceled": PENDING // 2 + RUNNING,
        "completed": PENDING // 2 + FINISHED,
    }
