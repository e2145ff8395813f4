"""What operators watch, end to end: workers from heartbeats, per-minute metrics, dead letters."""

from __future__ import annotations

import uuid

import httpx
import pytest
from nats.aio.client import Client

from tests.conftest import StartService
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration


async def test_workers_metrics_and_dead_letters_come_from_the_logs(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    start("projections")
    start("worker", FQ_WORKER_ID="w-a", FQ_WORKER_HEARTBEAT="0.5")
    leaving = start("worker", FQ_WORKER_ID="w-b", FQ_WORKER_HEARTBEAT="0.5")
    workers = await wait_until(
        lambda: gateway.get("/workers"),
        lambda r: sorted(w["worker_id"] for w in r.json()) == ["w-a", "w-b"],
        timeout=20,
        what="both workers' heartbeats",
    )
    assert {w["health"] for w in workers.json()} == {"healthy"}

    ids = [
        (await gateway.post("/jobs", json={"type": t})).json()["job_id"]
        for t in ["echo"] * 8 + ["fail"] * 2
    ]
    poison = str(uuid.uuid4())
    await nc.jetstream().publish(f"fq.job.default.{poison}.submitted", b"[]")
    totals = (
        await wait_until(
            lambda: gateway.get("/stats/throughput"),
            lambda r: (
                r.json()["totals"]["succeeded"] == 8
                and r.json()["totals"]["failed"] == 2
                and r.json()["totals"]["dead_lettered"] == 3
            ),
            timeout=20,
            what="the metrics of 11 jobs",
        )
    ).json()["totals"]

    assert totals["submitted"] == 10  # the poison message never became a submitted job
    assert totals["started"] == 10
    assert totals["wait_ms_p50"] is not None and totals["wait_ms_p50"] <= totals["wait_ms_p99"]
    assert totals["run_ms_p99"] is not None
    letters = {d["job_id"]: d for d in (await gateway.get("/dead-letters")).json()["items"]}
    assert set(letters) == {poison, *ids[8:]}  # the poison message and the permanent failures
    assert "must be a JSON object" in letters[poison]["reason"]
    assert letters[ids[8]]["reason"] == "permanent error: failed on purpose"
    projections = (await gateway.get("/projections")).json()
    assert projections[0]["name"] == "jobs" and projections[0]["parked_events"] == 1
    assert len(ids) == 10

    assert leaving.terminate() == 0
    after = await wait_until(
        lambda: gateway.get("/workers"),
        lambda r: (
            {w["worker_id"]: w["health"] for w in r.json()}.get("w-b") == "gone"
            and sum(w["processed"] for w in r.json()) == 10
        ),
        timeout=20,
        what="the stopped worker to be gone, with every job counted",
    )
    by_id = {w["worker_id"]: w for w in after.json()}
    assert by_id["w-a"]["health"] == "healthy"
    assert by_id["w-b"]["stopped"] is True
    assert by_id["w-a"]["failed"] + by_id["w-b"]["failed"] == 2
