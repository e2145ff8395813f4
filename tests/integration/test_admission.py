"""Admission control: past FQ_GATEWAY_MAX_INFLIGHT submissions the gateway answers 503 with
Retry-After at once, loses nothing, and accepts again once the burst is over.

The admitted submissions are held in flight deterministically: the nats-server is stopped
(SIGSTOP, by its pid) so no JetStream acknowledgement can come, and continued (SIGCONT)
once the refusals are in. The gateway waits for acks longer than the test could take
(FQ_PUBLISH_TIMEOUT), so nothing depends on timing."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.embedded import EmbeddedNats
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.settings import Settings
from tests.conftest import StartService, ready_gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

LIMIT = 4
BURST = 12
JOB = {"type": "echo", "payload": {"n": 1}}


@contextmanager
def stopped(server: EmbeddedNats) -> Iterator[None]:
    """The nats-server frozen (it answers nothing) until the block ends."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


async def submitted_count(nc: Client) -> int:
    info = await nc.jetstream().stream_info(EVENT_STREAM, subjects_filter="fq.job.*.*.submitted")
    return sum((info.state.subjects or {}).values())


def shed_counts(exposition: str) -> dict[tuple[str, str], float]:
    """``fq_http_requests_shed_total`` by (route, reason), those above 0."""
    return {
        (sample.labels["route"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "fq_http_requests_shed_total" and sample.value > 0
    }


async def first_answers(
    requests: list[asyncio.Task[httpx.Response]], count: int, timeout: float
) -> list[asyncio.Task[httpx.Response]]:
    """The first ``count`` of ``requests`` to be answered (waits at most ``timeout``)."""
    done: set[asyncio.Task[httpx.Response]] = set()
    async with asyncio.timeout(timeout):
        while len(done) < count:
            finished, _ = await asyncio.wait(
                [r for r in requests if r not in done], return_when=asyncio.FIRST_COMPLETED
            )
            done |= finished
    return [r for r in requests if r in done]


async def test_submissions_past_the_limit_are_shed_with_503_and_none_is_lost(
    start: StartService, settings: Settings, nats_server: EmbeddedNats, nc: Client
) -> None:
    process = start(
        "gateway", FQ_GATEWAY_MAX_INFLIGHT=str(LIMIT), FQ_PUBLISH_TIMEOUT="60", FQ_LOG_LEVEL="INFO"
    )
    limits = httpx.Limits(max_connections=BURST + 4)
    async with httpx.AsyncClient(
        base_url=str(settings.gateway_url), timeout=60, limits=limits
    ) as client:
        await ready_gateway(process, client)
        keys = [f"burst-{i}" for i in range(BURST)]

        def submit(key: str) -> asyncio.Task[httpx.Response]:
            return asyncio.create_task(
                client.post("/jobs", json=JOB, headers={"Idempotency-Key": key})
            )

        with stopped(nats_server):
            requests = [submit(key) for key in keys]
            # The LIMIT admitted ones wait for JetStream, which cannot answer: every other
            # one is refused, without waiting for them.
            refused = await first_answers(requests, BURST - LIMIT, timeout=30)
            # Not shed while submissions are: reads, health, and a batch is a submission.
            health = await client.get("/healthz")
            batch = await client.post("/jobs:batch", json={"jobs": [JOB, JOB]})
            assert not any(r.done() for r in requests if r not in refused)

        admitted = [r for r in requests if r not in refused]
        accepted = [await r for r in admitted]
        shed = [r.result() for r in refused]

        assert health.status_code == 200
        for answer in [*shed, batch]:
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == str(settings.retry_after_seconds)
            assert "overloaded" in answer.json()["detail"]
        assert [a.status_code for a in accepted] == [202] * LIMIT, [a.text for a in accepted]

        # Every 202 is in the log, nothing refused is.
        event_log = NatsLog(nc)
        accepted_ids = {a.json()["job_id"] for a in accepted}
        for job_id in accepted_ids:
            assert await event_log.history(job_id), f"accepted job {job_id} is not in the log"
        assert await submitted_count(nc) == LIMIT

        shed = shed_counts((await client.get("/metrics")).text)
        assert shed == {("/jobs", "inflight"): BURST - LIMIT, ("/jobs:batch", "inflight"): 1}

        # After the burst the refused ones are retried with their keys and accepted: one new
        # job each, none a replay of another.
        refused_keys = [key for key, r in zip(keys, requests, strict=True) if r in refused]
        retried = [
            await client.post("/jobs", json=JOB, headers={"Idempotency-Key": key})
            for key in refused_keys
        ]
        assert [r.status_code for r in retried] == [202] * (BURST - LIMIT)
        assert {r.headers["idempotent-replayed"] for r in retried} == {"false"}
        retried_ids = {r.json()["job_id"] for r in retried}
        assert len(retried_ids | accepted_ids) == BURST
        assert await submitted_count(nc) == BURST
