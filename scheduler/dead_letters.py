"""Routing jobs that reached MaxDeliver to the dead-letter stream.

JetStream has no dead-letter queue. When a dispatch consumer gives up on a message (it was
delivered ``FQ_MAX_DELIVER`` times without an ack: the workers holding it died, or kept
losing its lease), the server publishes a MAX_DELIVERIES advisory carrying the message's
stream sequence, not its body, and only if someone listens. The ``FQ_ADVISORIES`` stream
listens durably, so no advisory is lost while this router is down. For each advisory the
router:

1. reads the original message from ``FQ_EVENTS`` by its sequence (it stays there: the event
   log keeps everything);
2. copies it to ``fq.dlq.<queue>.<job_id>`` in ``FQ_DLQ`` with the reason and its lineage in
   headers (stream sequence, deliveries, the last worker and error seen in the job's events);
3. appends ``dead_lettered`` to the job's events, so its status becomes ``failed``;
4. acks the advisory.

A crash between steps repeats them on redelivery: the copy and the event carry deterministic
``Nats-Msg-Id`` values, and the fold ignores a second ``dead_lettered``.
"""

from __future__ import annotations

import asyncio
import json
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg

from ferrisqueue.deadletter import dead_letter
from ferrisqueue.eventlog import EventLog, StoredEvent, fold_history
from ferrisqueue.events import Failed, Started
from ferrisqueue.puller import Puller
from ferrisqueue.subjects import ADVISORY_STREAM, EVENT_STREAM
from ferrisqueue.topology import ensure_consumer, load_consumer_definition

log = logging.getLogger(__name__)

ROUTER_CONSUMER = "fq-dlq-router"


class DeadLetterRouter:
    """Moves every job that reached MaxDeliver to ``FQ_DLQ`` and marks it dead-lettered."""

    def __init__(self, nc: Client, event_log: EventLog) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._log = event_log

    async def run(self, stopping: asyncio.Event) -> None:
        await ensure_consumer(
            self._nc, ADVISORY_STREAM, load_consumer_definition(ADVISORY_STREAM, ROUTER_CONSUMER)
        )
        puller = Puller(self._nc, ADVISORY_STREAM, ROUTER_CONSUMER)
        await puller.start()

        async def one_at_a_time() -> int:
            return 1

        try:
            async for burst in puller.bursts(stopping, request_size=one_at_a_time):
                for advisory in burst:
                    await self.route(advisory)
        finally:
            await puller.stop()

    async def route(self, advisory: Msg) -> None:
        """Dead-letter the job one advisory names, then ack the advisory."""
        body = json.loads(advisory.data)
        seq, deliveries = int(body["stream_seq"]), int(body.get("deliveries", 0))
        raw = await self._js.get_msg(EVENT_STREAM, seq)
        assert raw.subject is not None and raw.time is not None
        stored = StoredEvent.decode(seq, raw.subject, raw.data or b"", raw.time)
        if stored.event is None:  # workers terminate these themselves; nothing to route
            await advisory.ack()
            return
        job = stored.event
        history = await self._log.history(job.job_id)
        state = fold_history(history)
        last_error = next(
            (s.event.error for s in reversed(history) if isinstance(s.event, Failed)), None
        )
        worker = next(
            (s.event.worker for s in reversed(history) if isinstance(s.event, Started)), None
        )
        reason = f"given up after {deliveries} deliveries (workers died or lost the lease)"
        if state is not None and not state.status.is_terminal:
            await dead_letter(
                self._log,
                queue=job.queue,
                job_id=job.job_id,
                original=raw.data or b"",
                reason=reason,
                dedup=str(seq),
                lineage={
                    "Stream-Seq": seq,
                    "Deliveries": deliveries,
                    "Attempts": state.attempts,
                    "Last-Worker": worker,
                    "Last-Error": last_error,
                },
            )
            log.warning("dead-lettered %s: %s", job.job_id, reason)
        await advisory.ack()
