"""``POST /jobs:batch`` on a real gateway: all jobs stored before the 202, or none published
when one item is invalid (422 naming it) or too large (413); 503 while NATS is away."""

from __future__ import annotations

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.embedded import EmbeddedNats
from ferrisqueue.subjects import EVENT_STREAM
from tests.support.waits import collect_events

pytestmark = pytest.mark.integration


async def stored_messages(nc: Client) -> int:
    info = await nc.jetstream().stream_info(EVENT_STREAM)
    count: int = info.state.messages
    return count


async def test_batch_is_stored_before_the_202(gateway: httpx.AsyncClient, nc: Client) -> None:
    jobs = [{"type": "echo", "payload": {"n": n}} for n in range(5)]
    jobs.append({"type": "echo", "queue": "other", "max_attempts": 7})

    response = await gateway.post("/jobs:batch", json={"jobs": jobs})

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["failed"]) == (6, 0)
    assert [item["index"] for item in body["jobs"]] == list(range(6))
    assert {item["outcome"] for item in body["jobs"]} == {"accepted"}
    assert body["jobs"][5]["queue"] == "other"
    assert body["jobs"][0]["status_url"].endswith(f"/jobs/{body['jobs'][0]['job_id']}/status")
    # Acked means stored: every event is in the log when the answer arrives.
    assert await stored_messages(nc) == 6
    events = await collect_events(
        nc, "fq.job.*.*.submitted", until=lambda got: len(got) == 6, timeout=10
    )
    by_id = {e["job_id"]: e for e in events}
    for n, item in enumerate(body["jobs"][:5]):
        assert by_id[item["job_id"]]["payload"] == {"n": n}
        assert by_id[item["job_id"]]["submitted_by"] == "127.0.0.1"
    assert by_id[body["jobs"][5]["job_id"]]["max_attempts"] == 7  # job options carried over
    status = await gateway.get(body["jobs"][0]["status_url"])
    assert status.json()["status"] == "pending"


async def test_one_invalid_item_refuses_the_batch_naming_its_index(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    breaks_contract = {"type": "email", "payload": {}}  # the email contract needs recipients
    bad_type = {"type": "not a token!"}

    response = await gateway.post(
        "/jobs:batch", json={"jobs": [{"type": "echo"}, breaks_contract, {"type": "echo"}]}
    )
    also_bad = await gateway.post("/jobs:batch", json={"jobs": [{"type": "echo"}] * 2 + [bad_type]})
    delayed = await gateway.post("/jobs:batch", json={"jobs": [{"type": "echo", "delay": 5}]})

    assert response.status_code == 422
    locs = [error["loc"] for error in response.json()["detail"]]
    assert locs and all(loc[:4] == ["body", "jobs", 1, "payload"] for loc in locs)
    assert also_bad.status_code == 422
    assert ["body", "jobs", 2, "type"] in [e["loc"] for e in also_bad.json()["detail"]]
    assert delayed.status_code == 422  # a delayed job is not a `submitted` event
    assert delayed.json()["detail"][0]["loc"] == ["body", "jobs", 0, "delay"]
    assert await stored_messages(nc) == 0


async def test_empty_too_many_and_oversized_batches_are_refused(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    empty = await gateway.post("/jobs:batch", json={"jobs": []})
    too_many = await gateway.post("/jobs:batch", json={"jobs": [{"type": "echo"}] * 1001})
    oversized = await gateway.post(
        "/jobs:batch",
        json={"jobs": [{"type": "echo"}, {"type": "echo", "payload": {"x": "a" * 600_000}}]},
    )

    assert empty.status_code == 422
    assert too_many.status_code == 422
    assert oversized.status_code == 413
    assert oversized.json()["detail"].startswith("job 1: ")
    assert await stored_messages(nc) == 0


async def test_batch_is_503_with_retry_after_while_nats_is_away(
    gateway: httpx.AsyncClient, nats_server: EmbeddedNats
) -> None:
    nats_server.stop()

    response = await gateway.post("/jobs:batch", json={"jobs": [{"type": "echo"}] * 3})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert "retry" in response.json()["detail"].lower()
