"""While NATS is away the gateway refuses writes with 503 + Retry-After (never 500) and
keeps answering reads from the read store; it recovers by itself."""

from __future__ import annotations

import httpx
import pytest

from ferrisqueue.log.embedded import EmbeddedNats
from tests.conftest import StartService
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration


async def test_gateway_answers_503_while_nats_is_down_and_recovers(
    gateway: httpx.AsyncClient, start: StartService, nats_server: EmbeddedNats
) -> None:
    start("worker")
    start("projections")
    done = (await gateway.post("/jobs", json={"type": "echo"})).json()["job_id"]
    await wait_until(
        lambda: gateway.get(f"/jobs/{done}/status"),
        lambda r: r.json()["source"] == "read_store" and r.json()["status"] == "completed",
        timeout=15,
        what="a job completed before the outage",
    )

    nats_server.stop()
    refused = await gateway.post("/jobs", json={"type": "echo"})
    read = await gateway.get(f"/jobs/{done}/status")
    ready = await gateway.get("/readyz")

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "2"
    assert "retry" in refused.json()["detail"].lower()
    assert read.status_code == 200
    assert read.json()["status"] == "completed"
    assert ready.status_code == 503
    assert ready.json()["nats"] is False

    nats_server.start()
    accepted = await wait_until(
        lambda: gateway.post("/jobs", json={"type": "echo", "payload": {"after": "outage"}}),
        lambda r: r.status_code == 202,
        timeout=20,
        what="the gateway to accept jobs again",
        interval=0.2,
    )
    job_id = accepted.json()["job_id"]
    final = await wait_until(
        lambda: gateway.get(f"/jobs/{job_id}/status"),
        lambda r: r.json()["status"] == "completed",
        timeout=30,
        what="the job accepted after the outage to complete",
    )
    assert final.json()["result"] == {"after": "outage"}
