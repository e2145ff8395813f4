"""Oversized input: the gateway answers 413 above ``FQ_MAX_EVENT_BYTES``; a raw publish above
the server's max payload is refused (by the client, or by the server) and stores nothing; a
raw publish between ``FQ_MAX_EVENT_BYTES`` and 1 MiB is handled — completed, or dead-lettered
with a reason — and the workers keep serving."""

from __future__ import annotations

import json

import nats
import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.events import DeadLettered
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import DLQ_STREAM, EVENT_STREAM, dlq_subject, job_subject
from ferrisqueue.log.embedded import EmbeddedNats
from tests.conftest import StartService
from tests.fault.clients import Producer, publish_raw
from tests.fault.system import consuming
from tests.support.history import History, Outcome, verify

pytestmark = pytest.mark.fault

MIB = 1024 * 1024
EVENT_LIMIT = 512 * 1024
"""``FQ_MAX_EVENT_BYTES`` (the default)."""


def job_of(size: int, type_: str, **payload: object) -> bytes:
    """A raw ``submitted`` body of exactly ``size`` bytes (padded in the payload)."""
    body = {"type": type_, "payload": {**payload, "pad": ""}}
    pad = size - len(json.dumps(body).encode())
    body["payload"]["pad"] = "x" * pad  # type: ignore[index]
    data = json.dumps(body).encode()
    assert len(data) == size
    return data


@pytest.mark.timeout(50)
async def test_oversized_jobs_are_refused_or_handled_and_harm_nothing(
    start: StartService,
    nc: Client,
    nats_server: EmbeddedNats,
    producer: Producer,
    history: History,
    store: Engine,
) -> None:
    start("projections")
    workers = [start("worker", FQ_WORKER_ID=f"w{n}") for n in (1, 2)]
    await consuming(nc, waiting=2)

    big = {"type": "echo", "payload": {"pad": "x" * (EVENT_LIMIT + 1)}}
    await producer.submit("gateway-413", big)
    # Above the server's max payload: nats-py refuses it before sending.
    await publish_raw(
        nc, history, "raw-over-1mib", new_job_id(), job_of(MIB + 1, "echo"), expect=("completed",)
    )
    # Under it alone, over it with the producer's header: the server refuses it and drops
    # that producer's connection (its own, not ours).
    refused_id = new_job_id()
    history.invoke("raw-over-with-header", job_id=refused_id)
    with_header = await nats.connect(nats_server.url, allow_reconnect=False)
    try:
        await with_header.jetstream().publish(
            job_subject("default", refused_id, "submitted"),
            job_of(MIB - 16, "echo"),
            stream=EVENT_STREAM,
            headers={"Nats-Msg-Id": f"{refused_id}:submitted"},
            timeout=2,
        )
    except Exception as exc:  # a reset connection or a timeout: no answer, so unknown
        history.unknown("raw-over-with-header", type(exc).__name__)
    else:
        history.accepted("raw-over-with-header", refused_id, "ack")
    finally:
        await with_header.close()
    # Between the event limit and 1 MiB: stored; the worker copes.
    handled = ("completed", "dead_lettered")
    sizes = {"600k": 600 * 1024, "near-1mib": MIB - 64}
    for name, size in sizes.items():
        for type_ in ("echo", "sleep"):
            await publish_raw(
                nc,
                history,
                f"raw-{name}-{type_}",
                new_job_id(),
                job_of(size, type_, seconds=0.1),
                expect=handled,
            )
    await producer.submit("after", {"type": "echo", "payload": {"still": "served"}})
    verdict = await verify(nc, history, store)

    verdict.assert_ok()
    assert producer.statuses[413] == 1
    outcomes = {op.op_id: op.outcome for op in history.ops.values()}
    assert outcomes["gateway-413"] is Outcome.REJECTED
    assert outcomes["raw-over-1mib"] is Outcome.REJECTED
    assert outcomes["raw-over-with-header"] is Outcome.UNKNOWN
    assert verdict.observed is not None
    jobs = verdict.observed.jobs
    js = nc.jetstream()
    assert refused_id not in jobs, "a message over the max payload was stored"
    for name in sizes:
        # A result as large as the payload cannot be stored: the echo job is dead-lettered
        # with the reason; sleep's small result completes.
        echo = jobs[history.ops[f"raw-{name}-echo"].job_id or ""]
        [lettered] = [m.event for m in echo.messages if isinstance(m.event, DeadLettered)]
        assert "exceeds the limit" in lettered.reason
        original = echo.messages[0].data
        letter = await js.get_last_msg(DLQ_STREAM, dlq_subject("default", echo.job_id))
        assert letter.headers is not None and letter.data is not None
        if name == "near-1mib":  # no room beside the lineage headers: cut, and said so
            assert letter.headers["Fq-Truncated"] == str(len(original))
            assert len(letter.data) < len(original) and original.startswith(letter.data)
        else:
            assert letter.data == original
        sleep = jobs[history.ops[f"raw-{name}-sleep"].job_id or ""]
        assert sleep.kinds()[-1] == "succeeded"
    after = jobs[history.ops["after"].job_id or ""]
    assert after.state is not None and after.state.result == {"still": "served", "op": "after"}
    assert all(worker.alive() for worker in workers)
    assert nc.is_connected
