"""A redriven or purged job's copy leaves ``FQ_DLQ`` because the log says so: a gateway that
crashed between the event and the removal is finished by the scheduler's sweeper, and a copy
made by a later dead-lettering of the same job stays."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from ferrisqueue.domain.events import Purged, Redriven, Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import DLQ_STREAM, dlq_subject
from ferrisqueue.log.deadletter import dead_letter
from ferrisqueue.log.eventlog import EventLog
from tests.conftest import StartService
from tests.support.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]


async def copies(nc: Client, subject: str) -> list[bytes]:
    """The job's messages in FQ_DLQ, oldest first."""
    found, seq = [], 1
    while True:
        try:
            msg = await nc.jetstream().get_msg(DLQ_STREAM, seq=seq, subject=subject, next=True)
        except Exception:  # no message at or after seq: the end
            return found
        found.append(msg.data or b"")
        assert msg.seq is not None
        seq = msg.seq + 1


async def dead(event_log: EventLog, job_id: str, copy: bytes) -> None:
    await dead_letter(
        event_log,
        queue="default",
        job_id=job_id,
        original=copy,
        reason="boom",
        dedup=copy.decode(),
        actor="scheduler",
    )


async def test_the_copies_a_crashed_action_left_are_swept_and_newer_ones_kept(
    start: StartService, nc: Client, event_log: EventLog
) -> None:
    redriven, purged = new_job_id(), new_job_id()
    for job_id in (redriven, purged):
        await event_log.append(Submitted(job_id=job_id, queue="default", at=utcnow(), type="echo"))
        await dead(event_log, job_id, b"first")
    # The gateway appended the events, then died before removing the copies.
    await event_log.append(
        Redriven(job_id=redriven, queue="default", at=utcnow(), attempt=0, actor="key:ops")
    )
    await event_log.append(Purged(job_id=purged, queue="default", at=utcnow(), actor="key:ops"))
    await dead(event_log, redriven, b"second")  # the redriven job failed for good again

    start("scheduler")
    await wait_until(
        lambda: copies(nc, dlq_subject("default", purged)),
        lambda found: found == [],
        timeout=20,
        what="the purged job's copy swept",
    )
    assert await copies(nc, dlq_subject("default", redriven)) == [b"second"]
