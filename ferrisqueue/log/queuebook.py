"""The book of queue controls: pause and resume a queue, set its limits, read its state and
its history.

Every change is one event on ``fq.queue.<queue>.<event>`` in ``FQ_CONTROLS``
(:mod:`ferrisqueue.domain.queuecontrol`), kept for good: the stream is both the audit and the
state (the newest event of each aspect wins: three last-by-subject gets). A change is guarded
with ``Nats-Expected-Last-Subject-Sequence`` over the queue's events, so of two operators who
act at once, each event is recorded against the state its writer saw; pausing a paused queue
(or setting the limits it has) records nothing and returns the state as it is.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from ferrisqueue.domain.limits import QueueLimits
from ferrisqueue.domain.queuecontrol import (
    CONTROL_STREAM,
    PAUSE_KINDS,
    QUEUE_SUBJECT_PREFIX,
    QueueEvent,
    QueueEventKind,
    QueueState,
    apply_queue_event,
    decode_queue_event,
    fold_queue,
    parse_queue_subject,
    queue_subject,
)
from ferrisqueue.errors import ConcurrentChange
from ferrisqueue.log.port import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    LogPort,
)

_TRIES = 5


class QueueBook:
    """Queue controls over a log (any :class:`~ferrisqueue.log.port.LogPort`)."""

    def __init__(self, log: LogPort) -> None:
        self._log = log

    async def state(self, queue: str) -> QueueState:
        """The queue's state as of its newest stored events (active and unlimited if it has
        none): the last pause or resume and the last setting of limits."""
        kinds = (*PAUSE_KINDS, QueueEventKind.LIMITS)
        found = await asyncio.gather(
            *(self._log.read(CONTROL_STREAM, queue_subject(queue, kind)) for kind in kinds)
        )
        return fold_queue(
            queue,
            [(m.seq, decode_queue_event(m.subject, m.data)) for m in found if m is not None],
        )

    async def states(self) -> dict[str, QueueState]:
        """Every queue that was ever controlled (paused, resumed, limited), by name."""
        subjects = await self._log.subjects(CONTROL_STREAM, f"{QUEUE_SUBJECT_PREFIX}.*.*")
        queues = sorted({parse_queue_subject(s)[0] for s in subjects})
        return {q: await self.state(q) for q in queues}

    async def history(self, queue: str) -> list[tuple[int, QueueEvent]]:
        """Every event of the queue, oldest first, with its stream sequence."""
        found: list[tuple[int, QueueEvent]] = []
        seq = 1
        while (
            msg := await self._log.read(CONTROL_STREAM, queue_subject(queue, "*"), from_seq=seq)
        ) is not None:
            found.append((msg.seq, decode_queue_event(msg.subject, msg.data)))
            seq = msg.seq + 1
        return found

    async def pause(
        self, queue: str, *, actor: str, at: datetime, reason: str | None = None
    ) -> QueueState:
        """Pause ``queue`` (nothing is recorded if it is paused already)."""
        return await self._change(queue, QueueEventKind.PAUSED, actor, at, reason)

    async def resume(
        self, queue: str, *, actor: str, at: datetime, reason: str | None = None
    ) -> QueueState:
        """Resume ``queue`` (nothing is recorded if it is not paused)."""
        return await self._change(queue, QueueEventKind.RESUMED, actor, at, reason)

    async def set_limits(
        self,
        queue: str,
        limits: QueueLimits,
        *,
        actor: str,
        at: datetime,
        reason: str | None = None,
    ) -> QueueState:
        """Set every limit of ``queue`` (one left out is lifted); nothing is recorded if
        they are the queue's limits already."""
        return await self._change(queue, QueueEventKind.LIMITS, actor, at, reason, limits)

    async def _change(
        self,
        queue: str,
        kind: QueueEventKind,
        actor: str,
        at: datetime,
        reason: str | None,
        limits: QueueLimits | None = None,
    ) -> QueueState:
        for _ in range(_TRIES):
            current = await self.state(queue)
            if kind is QueueEventKind.LIMITS:
                if current.limits == limits:
                    return current
            elif current.paused == (kind is QueueEventKind.PAUSED):
                return current
            event = QueueEvent(
                queue=queue, event=kind, actor=actor, at=at, reason=reason, limits=limits
            )
            headers = {
                EXPECTED_LAST_SUBJECT_SEQ: str(current.seq),
                EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: queue_subject(queue, "*"),
            }
            try:
                seq = await self._log.publish(
                    event.subject, event.encode(), stream=CONTROL_STREAM, headers=headers
                )
            except ConcurrentChange:
                continue  # someone else changed it first: decide again on their state
            return apply_queue_event(current, seq, event)
        raise ConcurrentChange(f"the state of queue {queue} kept changing")
