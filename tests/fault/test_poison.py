"""Poison input published straight to NATS — a body that is not JSON, a job type no worker
has, a payload its type's contract refuses — is dead-lettered at once with the reason and the
original bytes, never delivered again; the workers keep running and valid jobs complete."""

from __future__ import annotations

import json

import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.events import DeadLettered
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import DLQ_STREAM, dlq_subject
from tests.conftest import StartService
from tests.fault.clients import Producer, publish_raw
from tests.fault.system import consuming, drained
from tests.support.history import History, verify

pytestmark = pytest.mark.fault

POISON = {
    # kind: (body, the start of the dead-letter reason)
    "malformed": (b'{"type": "echo", "payload": {', "undecodable job: body is not JSON"),
    "not-an-object": (b'["echo"]', "undecodable job: body must be a JSON object"),
    "unknown-type": (
        json.dumps({"type": "no_such_task", "payload": {}}).encode(),
        "permanent error: no task 'no_such_task' on this worker",
    ),
    "invalid-payload": (
        json.dumps(
            {"type": "email", "payload": {"subject": "hi", "text": "no recipient"}}
        ).encode(),
        "permanent error: invalid email payload",
    ),
}
ROUNDS = 5


@pytest.mark.timeout(45)
async def test_poison_messages_are_dead_lettered_at_once_and_the_workers_go_on(
    start: StartService, nc: Client, producer: Producer, history: History, store: Engine
) -> None:
    start("projections")
    workers = [start("worker", FQ_WORKER_ID=f"w{n}") for n in (1, 2)]
    await consuming(nc, waiting=2)

    for n in range(ROUNDS):
        for kind, (body, _) in POISON.items():
            await publish_raw(
                nc, history, f"{kind}-{n}", new_job_id(), body, expect=("dead_lettered",)
            )
        valid = json.dumps({"type": "echo", "payload": {"n": n}}).encode()
        await publish_raw(nc, history, f"raw-{n}", new_job_id(), valid, expect=("completed",))
        await producer.submit(f"http-{n}", {"type": "echo"})
    dispatch = await drained(nc)
    await producer.submit("next", {"type": "echo"})  # after all the poison: still served
    verdict = await verify(nc, history, store)

    verdict.assert_ok()
    # Every delivery gets the next consumer sequence: one per message means none came twice.
    assert dispatch.delivered is not None
    assert dispatch.delivered.consumer_seq == ROUNDS * (len(POISON) + 2)
    assert max(verdict.runs_per_job) <= 1
    assert verdict.observed is not None
    js = nc.jetstream()
    for n in range(ROUNDS):
        for kind, (body, reason) in POISON.items():
            job_id = history.ops[f"{kind}-{n}"].job_id or ""
            trace = verdict.observed.jobs[job_id]
            [lettered] = [m.event for m in trace.messages if isinstance(m.event, DeadLettered)]
            assert lettered.reason.startswith(reason), lettered.reason
            letter = await js.get_last_msg(DLQ_STREAM, dlq_subject("default", job_id))
            assert letter.data == body  # the original bytes, as published
    assert verdict.outcomes == {"dead_lettered": ROUNDS * len(POISON), "completed": 2 * ROUNDS + 1}
    assert all(worker.alive() for worker in workers)
