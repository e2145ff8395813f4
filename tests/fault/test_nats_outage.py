"""A NATS outage under sustained load: the nats-server is SIGKILLed and restarted (same port,
same data dir) while a producer submits at a steady rate. Writes answer 503 with Retry-After
(never 500), reads keep working from the read store, every service reconnects by itself, and
every job that got a 202 is processed; the producer retries unknown outcomes with the same
Idempotency-Key, so none of them becomes two jobs."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.log.embedded import EmbeddedNats
from tests.conftest import StartService
from tests.fault.clients import Pacer, Producer
from tests.fault.system import consuming
from tests.support.history import History, Outcome, verify
from tests.support.waits import wait_until

pytestmark = pytest.mark.fault

OPS = 120
RATE = 15.0
"""Submissions per second: the outage falls in the middle of the stream."""
JOB = {"type": "sleep", "payload": {"seconds": 0.2}}


@pytest.mark.timeout(55)
async def test_a_nats_outage_under_load_loses_no_accepted_job(
    start: StartService,
    nc: Client,
    nats_server: EmbeddedNats,
    gateway: httpx.AsyncClient,
    producer: Producer,
    history: History,
    store: Engine,
) -> None:
    services = [start("projections"), start("worker", FQ_WORKER_ID="w1")]
    services.append(start("worker", FQ_WORKER_ID="w2"))
    await consuming(nc, waiting=2)

    async def produce() -> None:
        pacer, ops = Pacer(RATE), []
        for n in range(OPS):
            await pacer.tick()
            # Each op retries its unknown outcomes for up to 30 s, with the same key.
            ops.append(asyncio.create_task(producer.submit(f"op-{n}", JOB, retry_for=30)))
        await asyncio.gather(*ops)

    producing = asyncio.create_task(produce())
    accepted = await wait_until(
        lambda: _accepted_and_completed(gateway, history),
        lambda found: found is not None,
        timeout=20,
        what="a job accepted and completed before the outage",
    )
    nats_server.kill()
    history.disrupted("nats-server SIGKILLed")
    await wait_until(
        lambda: _refused(producer), lambda n: n >= 5, timeout=15, what="five 503s in the outage"
    )
    during = await gateway.get(f"/jobs/{accepted}/status")  # NATS is still down
    await asyncio.to_thread(nats_server.start)  # same port, same data dir
    await producing
    verdict = await verify(nc, history, store, timeout=40)

    verdict.assert_ok()
    assert during.status_code == 200
    assert (during.json()["status"], during.json()["source"]) == ("completed", "read_store")
    assert producer.server_errors() == {}, "a 5xx other than 503"
    assert producer.unhelpful_503s == 0, "a 503 without Retry-After"
    assert set(producer.statuses) == {202, 503}
    assert [op for op in history.ops.values() if op.outcome is not Outcome.ACCEPTED] == []
    retried = [op for op in history.ops.values() if len(op.tries) > 1]
    assert retried, "no op met the outage"
    assert verdict.outcomes == {"completed": OPS}
    assert all(service.alive() for service in services), "a service did not survive"


async def _accepted_and_completed(gateway: httpx.AsyncClient, history: History) -> str | None:
    """A job the read store shows completed, if any yet."""
    for op in history.of(Outcome.ACCEPTED):
        answer = await gateway.get(f"/jobs/{op.job_id}/status")
        if answer.json()["status"] == "completed" and answer.json()["source"] == "read_store":
            return op.job_id
    return None


async def _refused(producer: Producer) -> int:
    return producer.statuses[503]
