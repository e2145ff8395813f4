"""MaxDeliver: jobs whose workers keep dying are given up after ``FQ_MAX_DELIVER`` deliveries,
copied to the dead-letter stream with their lineage by the scheduler's router, and end
``failed``; the other jobs of the same queue are not harmed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.subjects import DLQ_STREAM, dlq_subject
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.fault.system import consuming, starts
from tests.support.history import History, verify

pytestmark = pytest.mark.fault

LEASE = {"FQ_ACK_WAIT": "1", "FQ_MAX_DELIVER": "2"}
DOOMED = 10
"""Jobs that outlive every worker they land on."""
FINE = 20


@pytest.mark.timeout(50)
async def test_jobs_whose_workers_keep_dying_are_dead_lettered_with_their_lineage(
    start: StartService, nc: Client, producer: Producer, history: History, store: Engine
) -> None:
    start("projections")
    start("scheduler")
    for n in range(DOOMED):
        await producer.submit(
            f"doomed-{n}", {"type": "sleep", "payload": {"seconds": 60}}, expect=("dead_lettered",)
        )
    for n in range(FINE):
        await producer.submit(f"fine-{n}", {"type": "echo"})
    doomed = {history.ops[f"doomed-{n}"].job_id for n in range(DOOMED)}

    def all_doomed_started(attempt: int) -> Callable[[list[dict[str, Any]]], bool]:
        return lambda bodies: {e["job_id"] for e in bodies if e["attempt"] == attempt} >= doomed

    for attempt in (1, 2):  # each delivery of a doomed job kills its worker
        # As many slots as doomed jobs: once all of them have started, no other job is
        # running there, so the kill harms only the doomed.
        worker = start(
            "worker", FQ_WORKER_ID=f"w{attempt}", FQ_WORKER_CONCURRENCY=str(DOOMED), **LEASE
        )
        await starts(nc, all_doomed_started(attempt))
        worker.kill()
        history.worker_gone(f"w{attempt}")
    survivor = start("worker", FQ_WORKER_ID="w3", **LEASE)  # its pull lets the server give up
    await consuming(nc, waiting=1)
    for n in range(FINE):
        await producer.submit(f"later-{n}", {"type": "echo"})
    verdict = await verify(nc, history, store)

    verdict.assert_ok()
    assert verdict.outcomes == {"dead_lettered": DOOMED, "completed": 2 * FINE}
    assert verdict.runs_per_job == {1: 2 * FINE, 2: DOOMED}, "a doomed job ran a third time"
    assert verdict.observed is not None and verdict.observed.store is not None
    js = nc.jetstream()
    for n in range(DOOMED):
        job_id = history.ops[f"doomed-{n}"].job_id or ""
        trace = verdict.observed.jobs[job_id]
        state = verdict.observed.store.rows[job_id]
        assert (state.status, state.dead_lettered) == ("failed", True)
        assert state.last_error is not None and "given up after 2 deliveries" in state.last_error
        letter = await js.get_last_msg(DLQ_STREAM, dlq_subject("default", job_id))
        assert letter.headers is not None
        lineage = {k: v for k, v in letter.headers.items() if k.startswith("Fq-")}
        assert lineage["Fq-Stream-Seq"] == str(trace.messages[0].seq)
        assert (lineage["Fq-Deliveries"], lineage["Fq-Attempts"]) == ("2", "2")
        assert lineage["Fq-Last-Worker"] == "w2"
        assert letter.data == trace.messages[0].data  # the submitted event, byte for byte
    assert survivor.alive()
