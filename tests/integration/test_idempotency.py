"""Idempotency-Key: one key, one job — concurrently, on retries, and past the duplicate window."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.natslog import NatsLog
from gateway.idempotency import IdempotencyKeys, fingerprint
from tests.conftest import StartService
from tests.support.waits import collect_events

pytestmark = pytest.mark.integration

JOB = {"type": "echo", "payload": {"order": 42}, "queue": "default"}


async def submitted_count(nc: Client) -> int:
    info = await nc.jetstream().stream_info(EVENT_STREAM, subjects_filter="fq.job.*.*.submitted")
    return sum((info.state.subjects or {}).values())


async def test_twenty_concurrent_submissions_with_one_key_make_one_job(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    answers = await asyncio.gather(
        *(
            gateway.post("/jobs", json=JOB, headers={"Idempotency-Key": "order-42"})
            for _ in range(20)
        )
    )

    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert sorted(a.headers["idempotent-replayed"] for a in answers) == ["false"] + ["true"] * 19
    assert await submitted_count(nc) == 1


async def test_a_key_reused_for_another_body_is_refused(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    first = await gateway.post("/jobs", json=JOB, headers={"Idempotency-Key": "k1"})
    other = await gateway.post(
        "/jobs", json={**JOB, "payload": {"order": 43}}, headers={"Idempotency-Key": "k1"}
    )

    assert first.status_code == 202
    assert other.status_code == 422
    assert "different request body" in other.json()["detail"]
    assert await submitted_count(nc) == 1


async def test_a_retry_after_the_job_ran_publishes_nothing_new(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    """The key outlives JetStream's 2-minute duplicate window: the gateway checks the log
    instead of re-publishing, so the answer does not depend on Nats-Msg-Id dedup."""
    start("worker")
    first = (await gateway.post("/jobs", json=JOB, headers={"Idempotency-Key": "k2"})).json()
    await collect_events(
        nc, f"fq.job.*.{first['job_id']}.succeeded", until=lambda b: len(b) == 1, timeout=15
    )
    messages = (await nc.jetstream().stream_info(EVENT_STREAM)).state.messages

    again = await gateway.post("/jobs", json=JOB, headers={"Idempotency-Key": "k2"})

    assert again.status_code == 202
    assert again.json()["job_id"] == first["job_id"]
    assert (await nc.jetstream().stream_info(EVENT_STREAM)).state.messages == messages


async def test_a_key_whose_first_request_died_before_publishing_still_gets_its_job(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    """The first request claimed the key, then died before its publish: the retry with the
    same key publishes the job under the claimed id."""
    orphan = new_job_id()
    claim = await IdempotencyKeys(NatsLog(nc)).claim("k3", fingerprint(JOB), orphan)
    assert claim.first

    retry = await gateway.post("/jobs", json=JOB, headers={"Idempotency-Key": "k3"})

    assert retry.status_code == 202
    assert retry.json()["job_id"] == orphan
    assert (await gateway.get(f"/jobs/{orphan}/status")).json()["status"] == "pending"
    assert await submitted_count(nc) == 1


async def test_an_empty_or_overlong_key_is_422(gateway: httpx.AsyncClient) -> None:
    for key in ("", "k" * 256):
        answer = await gateway.post("/jobs", json=JOB, headers={"Idempotency-Key": key})
        assert answer.status_code == 422, key
