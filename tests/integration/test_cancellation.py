"""Cancellation: a pending job never runs, a running one stops, a finished one is 409; and
a job delivered twice (a duplicate submission) runs once."""

from __future__ import annotations

import json

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import EVENT_STREAM
from tests.conftest import StartService
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration


def kinds_of(bodies: list[dict[str, object]]) -> list[str]:
    """Event kinds from the subjects (a raw-published body need not name its kind)."""
    return [str(b["_subject"]).rsplit(".", 1)[-1] for b in bodies]


async def events_of(nc: Client, job_id: str, until_kind: str) -> list[str]:
    found = await collect_events(
        nc, f"fq.job.*.{job_id}.*", until=lambda b: until_kind in kinds_of(b), timeout=20
    )
    return kinds_of(found)


async def dispatch_drained(nc: Client) -> None:
    """Every runnable message handed to a worker and settled."""
    await wait_until(
        lambda: nc.jetstream().consumer_info(EVENT_STREAM, "fq-worker-default"),
        lambda i: i.num_pending == 0 and i.num_ack_pending == 0,
        timeout=20,
        what="the dispatch consumer to drain",
    )


async def test_a_canceled_pending_job_never_runs(
    gateway: httpx.AsyncClient, start: StartService, nc: Client, event_log: object
) -> None:
    job_id = (await gateway.post("/jobs", json={"type": "echo"})).json()["job_id"]

    answer = await gateway.post(f"/jobs/{job_id}/cancel")
    start("worker")
    await dispatch_drained(nc)

    assert answer.status_code == 202
    assert answer.json()["status"] == "canceled"
    kinds = await events_of(nc, job_id, "canceled")
    assert kinds == ["submitted", "cancel_requested", "canceled"]
    trail = (await gateway.get(f"/jobs/{job_id}/events")).json()
    assert trail[1]["actor"] == "anonymous"


async def test_a_running_job_is_canceled_by_its_worker(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    worker = start("worker")
    job_id = (
        await gateway.post("/jobs", json={"type": "sleep", "payload": {"seconds": 30, "steps": 30}})
    ).json()["job_id"]
    await events_of(nc, job_id, "started")

    answer = await gateway.post(f"/jobs/{job_id}/cancel")
    kinds = await events_of(nc, job_id, "canceled")

    assert answer.status_code == 202
    assert answer.json()["cancel_requested"] is True
    assert "succeeded" not in kinds
    final = await wait_until(
        lambda: gateway.get(f"/jobs/{job_id}/status"),
        lambda r: r.json()["status"] == "canceled",
        timeout=10,
        what="canceled status",
    )
    assert final.json()["finished_at"] is not None
    assert worker.alive()
    await dispatch_drained(nc)


async def test_canceling_a_finished_job_is_409_and_an_unknown_one_404(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    start("worker")
    job_id = (await gateway.post("/jobs", json={"type": "echo"})).json()["job_id"]
    await events_of(nc, job_id, "succeeded")

    finished = await gateway.post(f"/jobs/{job_id}/cancel")
    unknown = await gateway.post(f"/jobs/{new_job_id()}/cancel")

    assert finished.status_code == 409
    assert "already completed" in finished.json()["detail"]
    assert unknown.status_code == 404


async def test_a_job_submitted_twice_runs_once(
    start: StartService, nc: Client, event_log: object
) -> None:
    """Two `submitted` messages for one job id (a producer that republished without
    Nats-Msg-Id): the guarded `started` lets only one of them run."""
    start("worker", FQ_WORKER_ID="w1")
    start("worker", FQ_WORKER_ID="w2")
    job_id = new_job_id()
    body = json.dumps({"type": "sleep", "payload": {"seconds": 0.2}}).encode()
    for _ in range(2):
        await nc.jetstream().publish(f"fq.job.default.{job_id}.submitted", body)
    await events_of(nc, job_id, "succeeded")
    await dispatch_drained(nc)

    kinds = kinds_of(
        await collect_events(nc, f"fq.job.*.{job_id}.*", until=lambda b: len(b) >= 4, timeout=5)
    )
    assert kinds == ["submitted", "submitted", "started", "succeeded"]
