"""An attempt that a message started and that never ended is run again when the same message
comes back, even as a "first" delivery: a nats-server killed with -9 can forget deliveries
(and their count) that its consumer had not yet written to disk. Before ``started`` named
the message it ran, such a job stayed ``running`` for ever (found by tests/fault, a NATS
outage under load). A duplicate message of a running job is still left alone:
tests/integration/test_cancellation.py, ``test_a_job_submitted_twice_runs_once``."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from ferrisqueue.domain.events import Started, Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.log.eventlog import EventLog
from tests.conftest import StartService
from tests.support.waits import collect_events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def lifecycle(nc: Client, job_id: str, count: int) -> list[dict[str, object]]:
    return await collect_events(
        nc, f"fq.job.*.{job_id}.*", until=lambda bodies: len(bodies) >= count, timeout=20
    )


async def test_a_lost_attempt_of_the_delivered_message_is_run_again(
    start: StartService, nc: Client, event_log: EventLog
) -> None:
    job_id = new_job_id()
    seq = await event_log.append(
        Submitted(job_id=job_id, queue="default", at=utcnow(), type="echo")
    )
    # The attempt a worker started from that message before the server forgot it.
    await event_log.append(
        Started(
            job_id=job_id, queue="default", at=utcnow(), attempt=1, worker="gone", trigger_seq=seq
        )
    )
    start("worker", FQ_WORKER_ID="w1")  # its consumer delivers the message once, as new

    events = await lifecycle(nc, job_id, 4)

    assert [(e["event"], e.get("attempt"), e.get("worker")) for e in events] == [
        ("submitted", None, None),
        ("started", 1, "gone"),
        ("started", 2, "w1"),
        ("succeeded", 2, None),
    ]
    assert events[2]["trigger_seq"] == seq
