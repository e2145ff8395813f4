"""One job end to end: HTTP or a plain NATS publish -> event log -> worker -> read store."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.subjects import EVENT_STREAM
from tests.conftest import StartService
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration


async def status_of(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/jobs/{job_id}/status")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_completed_in_store(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    return await wait_until(
        lambda: status_of(client, job_id),
        lambda s: s["status"] == "completed" and s["source"] == "read_store",
        timeout=15,
        what=f"{job_id} completed in the read store",
    )


async def test_job_submitted_over_http_completes(
    gateway: httpx.AsyncClient, start: StartService
) -> None:
    start("worker")
    start("projections")

    response = await gateway.post("/jobs", json={"type": "echo", "payload": {"n": 1}})

    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status"] == "pending"
    assert accepted["status_url"].endswith(f"/jobs/{accepted['job_id']}/status")
    assert response.headers["location"] == accepted["status_url"]
    final = await wait_completed_in_store(gateway, accepted["job_id"])
    assert final["result"] == {"n": 1}
    assert final["attempts"] == 1
    assert final["started_at"] <= final["finished_at"]


async def test_job_published_with_plain_nats_completes(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    """What `nats pub fq.job.default.<id>.submitted '{...}' -H Nats-Msg-Id:<id>:submitted`
    sends: no job_id, queue, event or time in the body."""
    start("worker")
    start("projections")
    job_id = str(uuid.uuid4())

    ack = await nc.jetstream().publish(
        f"fq.job.default.{job_id}.submitted",
        json.dumps({"type": "echo", "payload": {"via": "nats"}}).encode(),
        headers={"Nats-Msg-Id": f"{job_id}:submitted"},
    )

    assert ack.stream == EVENT_STREAM
    final = await wait_completed_in_store(gateway, job_id)
    assert final["result"] == {"via": "nats"}


async def test_status_right_after_202_is_never_404(gateway: httpx.AsyncClient) -> None:
    """No projector and no worker run: the status can only come from the event log."""
    for _ in range(20):
        accepted = (await gateway.post("/jobs", json={"type": "echo"})).json()

        status = await status_of(gateway, accepted["job_id"])

        assert status["status"] == "pending"
        assert status["pending_reason"] == "queued"
        assert status["source"] == "event_log"


async def test_unknown_job_is_404(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get(f"/jobs/{uuid.uuid4()}/status")

    assert response.status_code == 404
    assert "no job" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"payload": {}}, "type"),
        ({"type": "has.dot"}, "type"),
        ({"type": "echo", "queue": "a b"}, "queue"),
        ({"type": "echo", "payload": [1, 2]}, "payload"),
        ({"type": "echo", "urgency": 3}, "urgency"),
    ],
    ids=[
        "missing-type",
        "type-not-a-token",
        "queue-not-a-token",
        "payload-not-object",
        "unknown-field",
    ],
)
async def test_bad_http_body_is_422_with_reason_and_stores_nothing(
    gateway: httpx.AsyncClient, nc: Client, body: dict[str, Any], reason: str
) -> None:
    response = await gateway.post("/jobs", json=body)

    assert response.status_code == 422
    assert reason in json.dumps(response.json()["detail"])
    info = await nc.jetstream().stream_info(EVENT_STREAM)
    assert info.state.messages == 0


async def test_non_json_body_is_422(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post(
        "/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


async def test_failing_handler_ends_failed_with_its_error(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    start("worker")
    start("projections")
    accepted = (
        await gateway.post("/jobs", json={"type": "fail", "payload": {"message": "boom"}})
    ).json()

    final = await wait_until(
        lambda: status_of(gateway, accepted["job_id"]),
        lambda s: s["status"] == "failed" and s["source"] == "read_store",
        timeout=15,
        what="failed in the read store",
    )

    assert final["last_error"] == "boom"
    events = await collect_events(
        nc, f"fq.job.*.{accepted['job_id']}.*", until=lambda b: len(b) >= 3, timeout=5
    )
    assert [e["event"] for e in events] == ["submitted", "started", "failed"]
    assert events[2]["error_type"].startswith("permanent:")


async def test_list_jobs_pages_newest_first_and_filters(
    gateway: httpx.AsyncClient, start: StartService
) -> None:
    start("worker")
    start("projections")
    ids = []
    for i in range(7):
        kind = "fail" if i % 3 == 0 else "echo"
        ids.append((await gateway.post("/jobs", json={"type": kind})).json()["job_id"])
    for job_id in ids:
        await wait_until(
            lambda job_id=job_id: status_of(gateway, job_id),
            lambda s: s["source"] == "read_store" and s["status"] in ("completed", "failed"),
            timeout=15,
            what=f"{job_id} finished",
        )

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await gateway.get("/jobs", params=params)).json()
        seen += [item["job_id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(ids))
    assert pages == 3
    failed = (await gateway.get("/jobs", params={"status": "failed"})).json()["items"]
    assert sorted(j["job_id"] for j in failed) == sorted(ids[0::3])
    counts = (await gateway.get("/queues")).json()
    assert counts == [
        {
            "queue": "default",
            "state": "active",  # never paused
            "changed_by": None,
            "changed_at": None,
            "limits": dict.fromkeys(("concurrency", "key_concurrency", "rate", "key_rate")),
            "limits_by": None,
            "limits_at": None,
            "counts": {"pending": 0, "running": 0, "completed": 4, "failed": 3, "canceled": 0},
        }
    ]


async def test_oversized_job_is_413_and_stores_nothing(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    response = await gateway.post("/jobs", json={"type": "echo", "payload": {"x": "a" * 600_000}})

    assert response.status_code == 413
    assert "exceeds the limit" in response.json()["detail"]
    info = await nc.jetstream().stream_info(EVENT_STREAM)
    assert info.state.messages == 0
