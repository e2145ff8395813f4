"""Leases and MaxDeliver: a killed worker's job runs again elsewhere, and a job whose workers
keep dying is dead-lettered with its lineage instead of staying `running` for ever."""

from __future__ import annotations

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.subjects import DLQ_STREAM
from tests.conftest import StartService
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration

SHORT_LEASE = {"FQ_ACK_WAIT": "1", "FQ_MAX_DELIVER": "2"}
LONG_JOB = {"type": "sleep", "payload": {"seconds": 30}}


async def started(nc: Client, job_id: str, count: int) -> list[dict[str, object]]:
    return await collect_events(
        nc, f"fq.job.*.{job_id}.started", until=lambda b: len(b) >= count, timeout=20
    )


async def test_a_killed_workers_job_runs_again_on_another_worker_as_attempt_2(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    first = start("worker", FQ_WORKER_ID="doomed", **SHORT_LEASE)
    job_id = (
        await gateway.post("/jobs", json={"type": "sleep", "payload": {"seconds": 2}})
    ).json()["job_id"]
    await started(nc, job_id, 1)

    first.kill()
    start("worker", FQ_WORKER_ID="rescuer", **SHORT_LEASE)
    done = await collect_events(
        nc, f"fq.job.*.{job_id}.succeeded", until=lambda b: len(b) == 1, timeout=20
    )

    attempts = await started(nc, job_id, 2)
    assert [(e["attempt"], e["worker"]) for e in attempts] == [(1, "doomed"), (2, "rescuer")]
    assert done[0]["attempt"] == 2


async def test_a_job_whose_workers_keep_dying_is_dead_lettered(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    start("scheduler")
    job_id = (await gateway.post("/jobs", json=LONG_JOB)).json()["job_id"]
    for attempt in (1, 2):
        worker = start("worker", FQ_WORKER_ID=f"w{attempt}", **SHORT_LEASE)
        await started(nc, job_id, attempt)
        worker.kill()
    last = start("worker", FQ_WORKER_ID="w3", **SHORT_LEASE)  # its pull request is waiting

    lettered = await collect_events(
        nc, f"fq.job.*.{job_id}.dead_lettered", until=lambda b: len(b) == 1, timeout=30
    )
    status = await wait_until(
        lambda: gateway.get(f"/jobs/{job_id}/status"),
        lambda r: r.json()["status"] == "failed",
        timeout=10,
        what="failed status",
    )

    assert "given up after 2 deliveries" in lettered[0]["reason"]
    assert status.json()["dead_lettered"] is True
    letter = await nc.jetstream().get_last_msg(DLQ_STREAM, f"fq.dlq.default.{job_id}")
    assert letter.headers is not None
    assert letter.headers["Fq-Deliveries"] == "2"
    assert letter.headers["Fq-Attempts"] == "2"
    assert letter.headers["Fq-Last-Worker"] == "w2"
    assert b'"sleep"' in (letter.data or b"")
    assert len(await started(nc, job_id, 2)) == 2, "the job ran a third time"
    assert last.alive()
