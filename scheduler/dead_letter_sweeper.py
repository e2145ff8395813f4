"""The dead-letter sweeper: a job's copy leaves ``FQ_DLQ`` because the log says so.

An operator's redrive or purge appends ``redriven`` / ``purged`` and then removes the job's
copy from the dead-letter stream (:mod:`gateway.dead_letter_ops`). A crash between the two
used to leave the copy behind for good. The removal now *follows from the event*: this loop
reads every ``redriven`` and ``purged`` from the log (durable consumer ``fq-dlq-sweeper``)
and removes the job's copies that were stored before the event, so a restart finishes what
a crash interrupted. The gateway still removes the copy at once, so an operator sees the
result without waiting for this loop; removing nothing is no error.

Only copies older than the event go: if the job was dead-lettered again after its redrive,
that newer copy is the one the operator must see, even when this loop reads an old event
long after (a scheduler that was down, a consumer replayed from the start of the log).
"""

from __future__ import annotations

from datetime import datetime

from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.domain.subjects import DLQ_STREAM, EVENT_STREAM, dlq_subject
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.port import Delivery
from ferrisqueue.log.service_loop import ConsumerLoop, Poison

SWEEPER_CONSUMER = "fq-dlq-sweeper"


class DeadLetterSweeper(ConsumerLoop):
    """Removes the dead-letter copies of redriven and purged jobs (see the module's notes)."""

    name = "dead-letter sweeper"
    stream = EVENT_STREAM
    consumer = SWEEPER_CONSUMER
    request_size = 16

    def __init__(self, event_log: EventLog) -> None:
        super().__init__(event_log)
        self._log = event_log

    async def handle(self, msg: Delivery) -> None:
        stored = StoredEvent.of(msg)
        if stored.event is None:
            raise Poison(f"undecodable {stored.subject}: nothing to sweep for it")
        subject = dlq_subject(stored.event.queue, stored.event.job_id)
        newer = await self._first_copy_after(subject, stored.stored_at)
        await self._log.purge(subject, stream=DLQ_STREAM, before_seq=newer)

    async def _first_copy_after(self, subject: str, moment: datetime) -> int | None:
        """The sequence of the job's first copy stored after ``moment`` (kept), if any.
        A job has one copy per dead-lettering, so this reads a handful of messages."""
        seq = 1
        while (copy := await self._log.read(DLQ_STREAM, subject, from_seq=seq)) is not None:
            if copy.stored_at > moment:
                return copy.seq
            seq = copy.seq + 1
        return None
