"""Appending to the event log on a real nats-server: every answer JetStream can give a
publish comes back as FerrisQueue's own result or error (``ferrisqueue/log/pubacks.py`` waits
for the answers; ``NatsLog`` translates them)."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client

from ferrisqueue.domain.events import Started, Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.errors import (
    ConcurrentChange,
    NatsUnavailable,
    PublishOutcomeUnknown,
    PublishRejected,
)
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.natslog import NatsLog

pytestmark = pytest.mark.timeout(30)


def submitted(job_id: str) -> Submitted:
    return Submitted(job_id=job_id, queue="default", at=utcnow(), type="echo")


async def test_appends_return_their_sequences_and_a_repeat_returns_the_first(
    event_log: EventLog,
) -> None:
    events = [submitted(new_job_id()) for _ in range(50)]
    seqs = await asyncio.gather(*(event_log.append(event) for event in events))

    assert sorted(seqs) == list(range(min(seqs), min(seqs) + 50))
    assert await event_log.append(events[7]) == seqs[7]  # same dedup key: stored once


async def test_a_guarded_append_after_a_stale_sequence_is_a_concurrent_change(
    event_log: EventLog,
) -> None:
    job = submitted(new_job_id())
    seq = await event_log.append(job)
    start = Started(job_id=job.job_id, queue="default", at=utcnow(), attempt=1, worker="w")

    with pytest.raises(ConcurrentChange):
        await event_log.append(start, after_seq=seq - 1)
    assert await event_log.append(start, after_seq=seq) == seq + 1


async def test_an_event_is_stored_with_no_header_but_its_dedup_key(
    nc: Client, event_log: EventLog
) -> None:
    # Every header is kept with every event and parsed on each read of it.
    job = submitted(new_job_id())
    seq = await event_log.append(job)

    stored = await nc.jetstream().get_msg(EVENT_STREAM, seq)
    assert stored.headers == {"Nats-Msg-Id": job.dedup_key()}


async def test_a_subject_no_stream_stores_is_nats_unavailable(event_log: EventLog) -> None:
    with pytest.raises(NatsUnavailable, match="no stream answers") as unanswered:
        await event_log.publish("nobody.stores.this", b"{}", stream=EVENT_STREAM, headers={})
    assert str(unanswered.value).endswith(f"stream {EVENT_STREAM} does not store this subject")


async def test_a_missing_stream_says_to_run_fq_init(nc: Client, event_log: EventLog) -> None:
    await nc.jetstream().delete_stream(EVENT_STREAM)
    job = submitted(new_job_id())
    with pytest.raises(NatsUnavailable, match=r"does not exist \(run `fq init`\)$"):
        await event_log.append(job)


async def test_the_wrong_stream_is_rejected_with_jetstreams_code(event_log: EventLog) -> None:
    with pytest.raises(PublishRejected) as rejected:
        await event_log.publish(
            f"fq.job.default.{new_job_id()}.submitted", b"{}", stream="OTHER", headers={}
        )
    assert rejected.value.code == 10060  # expected stream does not match


async def test_no_answer_in_time_is_an_unknown_outcome(nc: Client, event_log: EventLog) -> None:
    await nc.subscribe("listens.but.never.answers")  # interest, so no 503 either
    slow = NatsLog(nc, publish_timeout=0.2)
    with pytest.raises(PublishOutcomeUnknown):
        await slow.publish("listens.but.never.answers", b"{}", stream=EVENT_STREAM, headers={})


async def test_a_socket_closed_under_a_publish_is_an_unknown_outcome(
    nc: Client, event_log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats-py writing to a socket the server has just closed raises uvloop's bare
    RuntimeError (seen on the 3-node cluster when the gateway's node was killed: a 500). The
    write stays in nats-py's buffer for after the reconnect: the outcome is unknown (a 503)."""

    async def closed(*args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "unable to perform operation on <TCPTransport closed=True reading=False>; "
            "the handler is closed"
        )

    monkeypatch.setattr(nc, "publish", closed)
    with pytest.raises(PublishOutcomeUnknown, match="the handler is closed"):
        await event_log.append(submitted(new_job_id()))
