"""The fast path of POST /jobs (gateway/fastsubmit.py) answers as the FastAPI route does.

A body sent as ``application/json`` takes the fast path; the same body sent as
``application/vnd.fq+json`` (a JSON type FastAPI reads, the fast path does not) goes through
the route. Each pair must get the same answer and leave the same job in the log."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.log.embedded import EmbeddedNats
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.settings import Settings
from tests.conftest import StartService, ready_gateway

pytestmark = pytest.mark.integration

FAST = {"content-type": "application/json"}
ROUTED = {"content-type": "application/vnd.fq+json"}
JOB = {"type": "echo", "payload": {"x": "é"}, "queue": "q1", "max_attempts": 2, "priority": 7}


def stable(answer: httpx.Response) -> dict[str, Any]:
    """What two answers for two different jobs have in common."""
    body = answer.json()
    job_id = body.pop("job_id", None)
    if job_id is not None:
        body["status_url"] = body["status_url"].replace(job_id, "<id>")
    headers = {
        name: value.replace(job_id, "<id>") if job_id else value
        for name, value in answer.headers.items()
        if name not in ("date", "content-length")
    }
    return {"status": answer.status_code, "body": body, "headers": headers}


async def post(client: httpx.AsyncClient, body: Any, headers: dict[str, str]) -> httpx.Response:
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    return await client.post("/jobs", content=content, headers=headers)


async def test_an_accepted_submission_is_answered_and_stored_alike(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    fast = await post(gateway, JOB, FAST)
    routed = await post(gateway, JOB, ROUTED)

    assert fast.status_code == 202, fast.text
    assert stable(fast) == stable(routed)
    assert fast.headers["location"] == fast.json()["status_url"]
    assert fast.json()["status_url"].endswith(f"/jobs/{fast.json()['job_id']}/status")
    event_log = NatsLog(nc)
    stored = [(await event_log.history(a.json()["job_id"]))[0].event for a in (fast, routed)]
    assert stored[0] is not None and stored[1] is not None
    ignored = {"job_id", "at"}
    assert stored[0].model_dump(exclude=ignored) == stored[1].model_dump(exclude=ignored)
    assert stored[0].actor == "anonymous"


async def test_a_delayed_job_and_an_idempotency_key_are_answered_alike(
    gateway: httpx.AsyncClient,
) -> None:
    later = {**JOB, "run_at": "2999-01-01T00:00:00Z"}
    fast = await post(gateway, later, {**FAST, "Idempotency-Key": "k-fast"})
    routed = await post(gateway, later, {**ROUTED, "Idempotency-Key": "k-routed"})
    assert fast.status_code == 202
    assert stable(fast) == stable(routed)
    assert fast.json()["run_at"] == "2999-01-01T00:00:00Z"
    assert fast.headers["idempotent-replayed"] == "false"

    # The same key through the other path names the same job, as a replay.
    replay = await post(gateway, later, {**ROUTED, "Idempotency-Key": "k-fast"})
    replay_fast = await post(gateway, later, {**FAST, "Idempotency-Key": "k-routed"})
    assert replay.json()["job_id"] == fast.json()["job_id"]
    assert replay_fast.json()["job_id"] == routed.json()["job_id"]
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay_fast.headers["idempotent-replayed"] == "true"
    assert stable(replay) == stable(replay_fast)

    # Another body with a used key: the app's own 422, from either path.
    conflict = await post(gateway, JOB, {**FAST, "Idempotency-Key": "k-fast"})
    assert conflict.status_code == 422
    assert stable(conflict) == stable(
        await post(gateway, JOB, {**ROUTED, "Idempotency-Key": "k-fast"})
    )


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[1, 2]",
        {"payload": {}},
        {"type": "echo", "extra": 1},
        {"type": "echo", "delay": 5, "run_at": "2999-01-01T00:00:00Z"},
        {"type": "echo", "depends_on": ["no-such-job"]},
        {"type": "echo", "payload": {"x": 1}, "queue": "bad queue"},
    ],
    ids=["not-json", "empty", "not-an-object", "no-type", "extra", "two-times", "parent", "queue"],
)
async def test_a_refused_body_gets_fastapis_own_answer(
    gateway: httpx.AsyncClient, body: Any
) -> None:
    fast = await post(gateway, body, FAST)
    routed = await post(gateway, body, ROUTED)

    assert fast.status_code == 422, fast.text
    assert stable(fast) == stable(routed)
    assert isinstance(fast.json()["detail"], list)  # FastAPI's validation error shape


async def test_an_idempotency_key_fastapi_refuses_is_refused(gateway: httpx.AsyncClient) -> None:
    too_long = "k" * 256
    fast = await post(gateway, JOB, {**FAST, "Idempotency-Key": too_long})
    routed = await post(gateway, JOB, {**ROUTED, "Idempotency-Key": too_long})
    assert fast.status_code == 422
    assert stable(fast) == stable(routed)


async def test_a_body_over_the_limit_gets_413_and_the_connection_is_closed(
    start: StartService, settings: Settings
) -> None:
    process = start("gateway", FQ_GATEWAY_MAX_BODY_BYTES="1024")
    async with httpx.AsyncClient(base_url=str(settings.gateway_url), timeout=10) as client:
        await ready_gateway(process, client)
        big = {"type": "echo", "payload": {"blob": "x" * 2000}}
        answers = [await post(client, big, FAST), await post(client, big, ROUTED)]
        assert stable(answers[0]) == stable(answers[1])
        assert answers[0].status_code == 413
        assert answers[0].headers["connection"] == "close"
        # A body under the limit is still served on a fresh connection.
        assert (await post(client, JOB, FAST)).status_code == 202


async def test_nats_away_is_the_apps_503(
    gateway: httpx.AsyncClient, nats_server: EmbeddedNats, settings: Settings
) -> None:
    assert (await post(gateway, JOB, FAST)).status_code == 202
    nats_server.stop()

    fast = await post(gateway, JOB, FAST)
    routed = await post(gateway, JOB, ROUTED)

    assert fast.status_code == 503
    assert fast.headers["retry-after"] == str(settings.retry_after_seconds)
    assert stable(fast) == stable(routed)
