"""Idempotency under concurrency: 20 identical submissions racing with one Idempotency-Key make
one job; the key reused for another body is refused (422) and that body is never stored."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.subjects import EVENT_STREAM
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.support.history import History, Outcome, verify

pytestmark = pytest.mark.fault

KEYS = 5
RACERS = 20


@pytest.mark.timeout(45)
async def test_concurrent_submissions_with_one_key_make_one_job_and_a_changed_body_is_422(
    start: StartService, nc: Client, producer: Producer, history: History, store: Engine
) -> None:
    start("projections")
    start("worker")

    async def race(key: str) -> None:
        """One op, sent RACERS times at once: every try must name the same job."""
        op = history.invoke(key)
        answers = await asyncio.gather(
            *(
                producer.http.post(
                    "/jobs",
                    json={"type": "echo", "payload": {"op": key}},
                    headers={"Idempotency-Key": key},
                )
                for _ in range(RACERS)
            )
        )
        for answer in answers:
            assert answer.status_code == 202, answer.text
            history.accepted(op.op_id, answer.json()["job_id"])
        replayed = sorted(a.headers["idempotent-replayed"] for a in answers)
        assert replayed == ["false"] + ["true"] * (RACERS - 1)

    await asyncio.gather(*(race(f"order-{n}") for n in range(KEYS)))
    for n in range(KEYS):  # the same key, another body
        await producer.submit(f"order-{n}-changed", {"type": "echo"}, key=f"order-{n}")
    verdict = await verify(nc, history, store)

    verdict.assert_ok()  # duplicated = ∅: each key's 20 answers named one job
    assert [op.outcome for op in history.ops.values()] == [Outcome.ACCEPTED] * KEYS + [
        Outcome.REJECTED
    ] * KEYS
    assert producer.statuses == {422: KEYS}
    assert verdict.outcomes == {"completed": KEYS}
    info = await nc.jetstream().stream_info(EVENT_STREAM, subjects_filter="fq.job.*.*.submitted")
    assert len(info.state.subjects or {}) == KEYS
