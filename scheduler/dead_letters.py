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

A crash between steps repeats them on redelivery: the copy carries the ``Nats-Msg-Id``
``<job_id>:dlq:<seq>`` (a repeat within ``FQ_DLQ``'s duplicate window is dropped), and a job
whose ``dead_lettered`` is already stored is finished (``failed``), so the repeat appends
nothing and only acks.

The router is a :class:`~ferrisqueue.log.service_loop.ConsumerLoop`, so one advisory cannot stop
the scheduler: an advisory that is not a MAX_DELIVERIES advisory, or that names a message
``FQ_EVENTS`` no longer holds, is poison and parked (terminated, kept in ``FQ_ADVISORIES``);
one whose routing fails (NATS away) is nak'd with backoff and comes back, while the router,
the timer relay and cron go on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from ferrisqueue.domain.events import SCHEDULER_ACTOR, Failed, Started
from ferrisqueue.domain.stored import StoredEvent, fold_history
from ferrisqueue.domain.subjects import ADVISORY_STREAM, ALL_JOB_EVENTS, EVENT_STREAM
from ferrisqueue.log.deadletter import dead_letter
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.port import Delivery
from ferrisqueue.log.service_loop import ConsumerLoop, Poison

log = logging.getLogger(__name__)

ROUTER_CONSUMER = "fq-dlq-router"


@dataclass(frozen=True, slots=True)
class Advisory:
    """What a MAX_DELIVERIES advisory says: which message was given up on, after how many
    deliveries."""

    stream_seq: int
    deliveries: int

    @classmethod
    def parse(cls, data: bytes) -> Advisory:
        """The advisory in ``data``; :class:`Poison` if it is not one."""
        try:
            body = json.loads(data)
            advisory = cls(int(body["stream_seq"]), int(body.get("deliveries", 0)))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise Poison(f"not a MAX_DELIVERIES advisory ({exc!r}): {data[:200]!r}") from exc
        if advisory.stream_seq < 1:
            raise Poison(f"an advisory naming stream sequence {advisory.stream_seq}")
        return advisory


class DeadLetterRouter(ConsumerLoop):
    """Moves every job that reached MaxDeliver to ``FQ_DLQ`` and marks it dead-lettered."""

    name = "dead-letter router"
    stream = ADVISORY_STREAM
    consumer = ROUTER_CONSUMER
    # request_size stays 1: one advisory at a time (a burst of them is rare).

    def __init__(self, event_log: EventLog) -> None:
        super().__init__(event_log)
        self._log = event_log

    async def handle(self, msg: Delivery) -> None:
        """Dead-letter the job one advisory names (acked by the loop once this returns)."""
        advisory = Advisory.parse(msg.data)
        seq, deliveries = advisory.stream_seq, advisory.deliveries
        raw = await self._log.read(EVENT_STREAM, ALL_JOB_EVENTS, from_seq=seq)
        if raw is None or raw.seq != seq:
            raise Poison(f"the advisory names sequence {seq}, which {EVENT_STREAM} does not hold")
        stored = StoredEvent.of(raw)
        if stored.event is None:  # workers terminate these themselves; nothing to route
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
                original=raw.data,
                reason=reason,
                dedup=str(seq),
                actor=SCHEDULER_ACTOR,
                lineage={
                    "Stream-Seq": seq,
                    "Deliveries": deliveries,
                    "Attempts": state.attempts,
                    "Last-Worker": worker,
                    "Last-Error": last_error,
                },
            )
            log.warning("dead-lettered %s: %s", job.job_id, reason)
        if state is not None:  # its children, if it ended (also a crashed worker's success)
            await self._log.announce_settled(job.job_id, actor=SCHEDULER_ACTOR)
