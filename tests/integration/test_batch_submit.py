"""``POST /jobs:batch`` on a real gateway: all jobs stored before the 202, or none published
when one item is invalid (422 naming it) or too large (413); 503 while NATS is away. Items
take what ``POST /jobs`` takes (``delay``, ``run_at``) and a per-item ``idempotency_key``
with the header's meaning: one key, one job."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.events import JobSpec, Scheduled, Submitted, utcnow
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.embedded import EmbeddedNats
from ferrisqueue.log.natslog import NatsLog
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
        assert by_id[item["job_id"]]["actor"] == "anonymous"
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
    both_times = {"type": "echo", "delay": 5, "run_at": "2030-01-01T00:00:00Z"}
    two_starts = await gateway.post("/jobs:batch", json={"jobs": [{"type": "echo"}, both_times]})

    assert response.status_code == 422
    locs = [error["loc"] for error in response.json()["detail"]]
    assert locs and all(loc[:4] == ["body", "jobs", 1, "payload"] for loc in locs)
    assert also_bad.status_code == 422
    assert ["body", "jobs", 2, "type"] in [e["loc"] for e in also_bad.json()["detail"]]
    assert two_starts.status_code == 422
    assert two_starts.json()["detail"][0]["loc"] == ["body", "jobs", 1]
    assert "give run_at or delay, not both" in two_starts.text
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


async def creation(nc: Client, job_id: str) -> JobSpec:
    """The event that created ``job_id``, read from the log."""
    history = await NatsLog(nc).history(job_id)
    assert history and isinstance(history[0].event, JobSpec), history
    return history[0].event


@pytest.mark.timeout(30)
async def test_batch_items_with_delay_or_run_at_are_scheduled_and_wait(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    later = (utcnow() + timedelta(hours=1)).replace(microsecond=0)
    jobs = [
        {"type": "echo", "delay": 60},
        {"type": "echo", "run_at": later.isoformat()},
        {"type": "echo", "run_at": (utcnow() - timedelta(minutes=1)).isoformat()},
        {"type": "echo", "delay": 0},
        {"type": "echo"},
    ]
    sent_at = utcnow()

    response = await gateway.post("/jobs:batch", json={"jobs": jobs})

    assert response.status_code == 202, response.text
    items = response.json()["jobs"]
    events = [await creation(nc, item["job_id"]) for item in items]
    assert [type(e) for e in events] == [Scheduled, Scheduled, Submitted, Submitted, Submitted]
    delayed, at_time = events[0], events[1]
    assert isinstance(delayed, Scheduled) and isinstance(at_time, Scheduled)
    assert timedelta(seconds=59) < delayed.run_at - sent_at <= timedelta(seconds=61)
    assert at_time.run_at == later
    assert datetime.fromisoformat(items[0]["run_at"]) == delayed.run_at
    assert datetime.fromisoformat(items[1]["run_at"]) == later
    # A job that runs at once answers as before batches took start times: no run_at key.
    assert all("run_at" not in item and "replayed" not in item for item in items[2:])
    status = await gateway.get(items[0]["status_url"])
    assert (status.json()["status"], status.json()["pending_reason"]) == ("pending", "scheduled")


@pytest.mark.timeout(30)
async def test_a_per_item_key_makes_one_job_however_often_the_batch_is_sent(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    jobs = [
        {"type": "echo", "payload": {"n": 1}, "idempotency_key": "order-1"},
        {"type": "echo", "payload": {"n": 2}, "delay": 60, "idempotency_key": "order-2"},
        {"type": "echo", "payload": {"n": 3}},
    ]

    first = await gateway.post("/jobs:batch", json={"jobs": jobs})
    again = await gateway.post("/jobs:batch", json={"jobs": jobs})
    single = await gateway.post(
        "/jobs", json={"type": "echo", "payload": {"n": 1}}, headers={"Idempotency-Key": "order-1"}
    )

    assert first.status_code == again.status_code == 202, (first.text, again.text)
    one, two = first.json()["jobs"], again.json()["jobs"]
    assert [i["replayed"] for i in one[:2]] == [False, False]
    assert [i["replayed"] for i in two[:2]] == [True, True]
    assert "replayed" not in one[2] and "replayed" not in two[2]
    assert [i["job_id"] for i in one[:2]] == [i["job_id"] for i in two[:2]]
    assert one[2]["job_id"] != two[2]["job_id"]  # no key: resending makes another job
    assert two[1]["run_at"] == one[1]["run_at"]  # the replay answers with the stored job
    assert {i["outcome"] for i in one + two} == {"accepted"}
    # The header and the item share the keys: the same key and job name the same job.
    assert single.status_code == 202
    assert single.headers["idempotent-replayed"] == "true"
    assert single.json()["job_id"] == one[0]["job_id"]
    assert await stored_messages(nc) == 4  # 2 keyed jobs once, the unkeyed one twice


@pytest.mark.timeout(30)
async def test_a_key_reused_for_another_job_refuses_the_batch_naming_the_item(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    first = await gateway.post(
        "/jobs:batch",
        json={"jobs": [{"type": "echo", "payload": {"n": 1}, "idempotency_key": "k"}]},
    )
    other_body = {"type": "echo", "payload": {"n": 9}, "idempotency_key": "k"}

    refused = await gateway.post("/jobs:batch", json={"jobs": [{"type": "echo"}, other_body]})

    assert first.status_code == 202
    assert refused.status_code == 422
    (error,) = refused.json()["detail"]
    assert error["loc"] == ["body", "jobs", 1, "idempotency_key"]
    assert "already used with a different request body" in error["msg"]
    assert await stored_messages(nc) == 1  # nothing of the refused batch was published


@pytest.mark.timeout(30)
async def test_two_items_with_one_key_and_one_job_are_one_job(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    item = {"type": "echo", "payload": {"n": 1}, "idempotency_key": "twice"}

    response = await gateway.post("/jobs:batch", json={"jobs": [item, item]})

    assert response.status_code == 202, response.text
    items = response.json()["jobs"]
    assert items[0]["job_id"] == items[1]["job_id"]
    assert sorted(i["replayed"] for i in items) == [False, True]
    assert await stored_messages(nc) == 1
