"""The log port's behaviour, one suite for every implementation (pyeventsourcing runs one
abstract test class for each recorder): ``tests/unit/test_log_port.py`` runs it on the
in-memory log in milliseconds, ``tests/integration/test_log_port.py`` on a real nats-server.
If the two ever disagree, the in-memory log is wrong and every unit test built on it is
suspect, so this suite is what lets the fast tests stand in for the slow ones.

A subclass provides the ``log`` fixture (an :class:`EventLog` with the topology applied)
and :meth:`LogContract.let_time_pass`: the in-memory log moves its clock, a real server's
consumers are simply waited on (a pull waits until the server redelivers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest

from ferrisqueue.domain.events import Started, Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import ADVISORY_STREAM, DLQ_STREAM, EVENT_STREAM, dlq_subject
from ferrisqueue.errors import ConcurrentChange, NatsUnavailable, PublishRejected
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.port import MSG_ID, Backlog, Consumer, Delivery, Pulling, StoredMessage
from tests.support.waits import wait_until

WAIT = 5.0
"""Seconds a test waits for a delivery before it fails."""

CONSUMER = "fq-contract"


def submitted(job_id: str | None = None, queue: str = "default") -> Submitted:
    return Submitted(
        job_id=job_id or new_job_id(), queue=queue, at=utcnow(), type="echo", actor="key:test"
    )


def consumer_config(queue: str, **overrides: Any) -> dict[str, Any]:
    """A dispatch-like consumer of ``queue``'s ``submitted`` events, AckWait 1 s."""
    return {
        "durable_name": CONSUMER,
        "filter_subjects": [f"fq.job.{queue}.*.submitted"],
        "deliver_policy": "all",
        "ack_policy": "explicit",
        "ack_wait": 1_000_000_000,
        "max_deliver": -1,
        **overrides,
    }


async def take(consumer: Consumer, count: int, *, timeout: float = WAIT) -> list[Delivery]:
    """The next ``count`` deliveries (asking for exactly as many as are still missing)."""
    got: list[Delivery] = []
    stopping = asyncio.Event()

    async def missing() -> int:
        return count - len(got)

    async with asyncio.timeout(timeout):
        async with contextlib.aclosing(consumer.bursts(stopping, request_size=missing)) as bursts:
            async for burst in bursts:
                got += burst
                if len(got) >= count:
                    break
    return got


class LogContract:
    """What every implementation of the log port guarantees."""

    quiet = 2.0
    """Seconds after which a pull that got nothing has shown there is nothing (a server
    needs its AckWait of 1 s and a pull's round; the in-memory log answers at once)."""

    async def let_time_pass(self, log: EventLog, seconds: float) -> None:
        """Let ``seconds`` pass for the log's timers (AckWait, nak delays)."""
        raise NotImplementedError

    async def consume(self, log: EventLog, queue: str, **overrides: Any) -> Consumer:
        await log.ensure_consumer(EVENT_STREAM, consumer_config(queue, **overrides))
        consumer = log.consumer(EVENT_STREAM, CONSUMER, Pulling(expires=0.5))
        await consumer.start()
        return consumer

    async def test_it_tells_which_streams_and_consumers_exist(self, log: EventLog) -> None:
        """What a NATS role, which may not create them, checks at start."""
        assert await log.has_stream(EVENT_STREAM)
        assert not await log.has_stream("FQ_NOPE")
        assert await log.consumer_definition(EVENT_STREAM, CONSUMER) is None
        assert await log.consumer_definition("FQ_NOPE", CONSUMER) is None

        await log.ensure_consumer(EVENT_STREAM, consumer_config("default", max_deliver=7))

        found = await log.consumer_definition(EVENT_STREAM, CONSUMER)
        assert found is not None
        assert (found["ack_wait"], found["max_deliver"]) == (1_000_000_000, 7)

    async def test_appends_take_increasing_sequences_and_a_history_is_one_jobs(
        self, log: EventLog
    ) -> None:
        first, other = submitted(), submitted()
        seqs = [await log.append(first), await log.append(other)]
        started = Started(
            job_id=first.job_id,
            queue="default",
            at=utcnow(),
            attempt=1,
            worker="w",
            actor="worker:w",
        )
        seqs.append(await log.append(started))

        history = await log.history(first.job_id)

        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        assert [(s.seq, s.event) for s in history] == [(seqs[0], first), (seqs[2], started)]
        assert (await log.newest(first.job_id)) == history[-1]
        assert await log.last_seq(EVENT_STREAM) == seqs[2]

    async def test_a_repeated_dedup_key_is_stored_once_and_answers_the_first_sequence(
        self, log: EventLog
    ) -> None:
        event = submitted()

        first = await log.append(event)
        again = await log.append(event)

        assert again == first
        assert len(await log.history(event.job_id)) == 1

    async def test_a_guarded_append_lands_only_on_the_sequence_it_names(
        self, log: EventLog
    ) -> None:
        event = submitted()
        seq = await log.append(event, after_seq=0)
        started = Started(job_id=event.job_id, queue="default", at=utcnow(), attempt=1, worker="w")

        with pytest.raises(ConcurrentChange):
            await log.append(started, after_seq=seq - 1)
        assert await log.append(started, after_seq=seq) > seq

    async def test_the_guard_is_checked_before_the_duplicate_window(self, log: EventLog) -> None:
        # What cron's "exactly one job per tick" relies on: a second creation is refused,
        # not answered as a duplicate.
        event = submitted()
        await log.append(event, after_seq=0)

        with pytest.raises(ConcurrentChange):
            await log.append(event, after_seq=0)

    async def test_a_message_for_another_stream_is_refused_and_one_no_stream_takes_is_unavailable(
        self, log: EventLog
    ) -> None:
        with pytest.raises(PublishRejected) as refused:
            await log.publish("fq.job.default.j1.submitted", b"{}", stream=DLQ_STREAM, headers={})
        assert refused.value.code == 10060
        with pytest.raises(NatsUnavailable):
            await log.publish("nobody.stores.this", b"", stream=DLQ_STREAM, headers={})

    async def test_read_finds_the_last_or_the_next_message_and_purge_removes_a_subject(
        self, log: EventLog
    ) -> None:
        job = new_job_id()
        subject = dlq_subject("default", job)
        one = await log.publish(subject, b"1", stream=DLQ_STREAM, headers={"Fq-Reason": "a"})
        two = await log.publish(subject, b"2", stream=DLQ_STREAM, headers={MSG_ID: f"{job}:2"})

        last = await log.read(DLQ_STREAM, subject)
        first = await log.read(DLQ_STREAM, "fq.dlq.default.*", from_seq=one)
        assert last is not None and (last.seq, last.data, last.subject) == (two, b"2", subject)
        assert first is not None and (first.seq, first.headers["Fq-Reason"]) == (one, "a")
        assert await log.subjects(DLQ_STREAM, "fq.dlq.default.>") >= {subject}

        await log.purge(subject, stream=DLQ_STREAM)

        assert await log.read(DLQ_STREAM, subject) is None
        assert await log.read(DLQ_STREAM, subject, from_seq=one) is None

    async def test_a_consumer_delivers_its_filter_in_order_with_place_and_storage_time(
        self, log: EventLog
    ) -> None:
        mine = [submitted(queue="contract") for _ in range(3)]
        seqs = []
        for event in mine:
            seqs.append(await log.append(event))
            await log.append(submitted(queue="elsewhere"))
        consumer = await self.consume(log, "contract")

        got = await take(consumer, 3)

        assert [(d.seq, d.deliveries, d.subject) for d in got] == [
            (seq, 1, e.subject) for seq, e in zip(seqs, mine, strict=True)
        ]
        stored = await log.history(mine[0].job_id)
        assert got[0].stored_at == stored[0].stored_at
        assert json.loads(got[0].data)["job_id"] == mine[0].job_id
        for delivery in got:
            await delivery.ack()
        await consumer.stop()

    async def test_backlogs_count_what_a_consumer_has_not_delivered_and_not_acked(
        self, log: EventLog
    ) -> None:
        for _ in range(3):
            await log.append(submitted(queue="contract"))
        await log.append(submitted(queue="elsewhere"))  # not in the consumer's filter
        consumer = await self.consume(log, "contract")
        (first,) = await take(consumer, 1)

        async def backlog() -> Backlog | None:
            return (await log.backlogs(EVENT_STREAM)).get(CONSUMER)

        await wait_until(backlog, lambda b: b == Backlog(2, 1), timeout=WAIT, what="2 + 1")
        await first.ack()
        await wait_until(backlog, lambda b: b == Backlog(2, 0), timeout=WAIT, what="2 + 0")
        await consumer.stop()

    async def test_a_nakd_delivery_comes_again_with_its_count(self, log: EventLog) -> None:
        seq = await log.append(submitted(queue="contract"))
        consumer = await self.consume(log, "contract")
        (first,) = await take(consumer, 1)

        await first.nak()
        (again,) = await take(consumer, 1)

        assert (again.seq, again.deliveries) == (seq, 2)
        await again.ack()
        await consumer.stop()

    async def test_an_unacked_delivery_comes_again_after_ack_wait(self, log: EventLog) -> None:
        seq = await log.append(submitted(queue="contract"))
        consumer = await self.consume(log, "contract")
        await take(consumer, 1)  # and never settled: a worker that died

        await self.let_time_pass(log, 1.5)
        (again,) = await take(consumer, 1)

        assert (again.seq, again.deliveries) == (seq, 2)
        await again.ack()
        await consumer.stop()

    async def test_a_terminated_delivery_never_comes_again(self, log: EventLog) -> None:
        await log.append(submitted(queue="contract"))
        consumer = await self.consume(log, "contract")
        (poison,) = await take(consumer, 1)

        await poison.term("poison")
        await self.let_time_pass(log, 1.5)
        later = await log.append(submitted(queue="contract"))
        (nxt,) = await take(consumer, 1)

        assert (nxt.seq, nxt.deliveries) == (later, 1)
        await nxt.ack()
        await consumer.stop()

    async def test_after_max_deliver_the_consumer_gives_up_with_an_advisory(
        self, log: EventLog
    ) -> None:
        seq = await log.append(submitted(queue="contract"))
        consumer = await self.consume(log, "contract", max_deliver=2)
        await take(consumer, 1)
        await self.let_time_pass(log, 1.5)
        (second,) = await take(consumer, 1)
        assert second.deliveries == 2

        await self.let_time_pass(log, 1.5)
        # A server gives up when a pull asks for the message again: ask, and get nothing.
        with pytest.raises(TimeoutError):
            await take(consumer, 1, timeout=self.quiet)
        subject = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{EVENT_STREAM}.{CONSUMER}"

        async def advisory() -> StoredMessage | None:
            return await log.read(ADVISORY_STREAM, subject)

        # The server publishes it on its own timer: re-check until it is stored.
        found = await wait_until(advisory, lambda m: m is not None, timeout=WAIT, what=subject)

        assert found is not None
        body = json.loads(found.data)
        assert (body["stream_seq"], body["deliveries"]) == (seq, 2)
        await consumer.stop()

    async def test_a_watcher_hears_of_messages_stored_on_its_subject(self, log: EventLog) -> None:
        heard: list[str] = []

        async def watcher(subject: str, data: bytes) -> None:
            heard.append(json.loads(data)["job_id"])

        await log.watch("fq.job.watched.*.submitted", watcher)
        event = submitted(queue="watched")
        await log.append(submitted(queue="elsewhere"))
        await log.append(event)

        async def seen() -> list[str]:
            return heard

        assert await wait_until(seen, bool, timeout=WAIT, what="the watcher") == [event.job_id]
