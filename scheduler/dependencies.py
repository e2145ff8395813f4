"""The dependency gate: releases a job that waits for its parents once they all succeeded,
and cancels it when one of them never will.

A job with ``depends_on`` is created ``awaiting``, which no dispatch consumer delivers. The
gate reads, from the durable pull consumer ``fq-scheduler-deps`` on ``FQ_EVENTS`` (shared by
every scheduler instance), each ``awaiting`` event and each ``settled`` note (a job ended
with children waiting), and acks it once handled:

* ``awaiting`` of a child: for each parent the log knows, append a ``dependent`` event on the
  *parent* (``child``: the child's id; ``Nats-Msg-Id`` ``<parent>:dependent:<child>``), then
  decide the child (below). A parent the log does not know cancels the child.
* ``settled`` of a job: read its history and decide each child its notes name.
* deciding a child: fold its history and each parent's, then
  :func:`~ferrisqueue.domain.dependencies.decide_dependencies` through
  :meth:`EventLog.command`: ``released`` (attempt 0) when all parents completed, ``canceled``
  naming a parent that failed for good or was canceled, else nothing. The appends are
  guarded by the child's newest sequence. A child that ends here and has children of its
  own is announced ``settled`` in turn (the cascade).

The index of waiting children is therefore the log itself: a parent's history lists its
children. Nothing is kept in memory, so a restart loses nothing, and any number of
instances can run.

Who writes ``settled``: whoever records a job's end, once it knows of a note stored before
the end. A worker appends its outcome guarded by the job's newest sequence it knows (read
when it started), so a note stored during the run refuses the append, and the worker reads
the job again and learns of it, at no cost when no note came; the rarer ends (a cancel by
the gateway, a redelivered job a crashed worker had finished, the dead-letter router, the
gate's own cancels) read the job's history after storing the end.

Why no child is stuck: the ``dependent`` note is stored *before* the gate reads the parent.
If the parent's end was stored before the note, the child's decision reads the parent ended.
If after, the writer of the end knew of the note (above) and wrote ``settled``, whose
handling decides the child. A crash before ``settled`` is written leaves its trigger unacked
(the job's message, the advisory, the gate's own event), and its redelivery writes it; a
crash before the gate's ack repeats the handling (notes are deduplicated by their
``Nats-Msg-Id`` within the 2-minute window; a later repeat is a second note the fold ignores).

Why none is released twice: every release or cancel is decided on the child's folded state
and appended under its newest sequence. Two deciders racing (two instances, or a repeat) are
serialised by that guard; the second reads the job released and decides nothing. The fold
rejects a second ``released`` anyway (the job is queued, no longer waiting).

Cost: nothing for a job without children (the gate reads no job's end); a history read per
parent when a child is decided.
"""

from __future__ import annotations

import asyncio
import logging

from ferrisqueue.domain.dependencies import decide_dependencies, parents_of
from ferrisqueue.domain.events import (
    SCHEDULER_ACTOR,
    Awaiting,
    Canceled,
    Dependent,
    Settled,
    utcnow,
)
from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.stored import StoredEvent, fold_history
from ferrisqueue.domain.subjects import EVENT_STREAM, parse_job_subject
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.port import Delivery
from ferrisqueue.log.service_loop import ConsumerLoop

log = logging.getLogger(__name__)

DEPENDENCY_CONSUMER = "fq-scheduler-deps"

BATCH = 64
"""Most events asked for per pull request."""


class DependencyGate(ConsumerLoop):
    """Releases or cancels jobs that wait for their parents, from the events in the log.

    A :class:`~ferrisqueue.log.service_loop.ConsumerLoop`: an event whose handling failed
    (NATS away) is nak'd with backoff and comes back; the gate goes on with the others."""

    name = "dependency gate"
    stream = EVENT_STREAM
    consumer = DEPENDENCY_CONSUMER

    def __init__(self, event_log: EventLog, *, batch: int = BATCH) -> None:
        super().__init__(event_log, request_size=batch)
        self._log = event_log

    async def handle_burst(self, burst: list[Delivery]) -> None:
        """Handle a burst concurrently: no order between events is needed (every decision
        reads the log afresh and is guarded)."""
        await asyncio.gather(*(self.process(msg) for msg in burst))

    async def handle(self, msg: Delivery) -> None:
        stored = StoredEvent.of(msg)
        event = stored.event
        if event is None:
            return  # the workers and the projector deal with poison
        if isinstance(event, Awaiting):
            await self._register(event)
        elif isinstance(event, Settled):
            await self._settled(event)

    async def _register(self, child: Awaiting) -> None:
        """Note the child on each parent, then decide it (in that order: see the module)."""
        for parent in child.depends_on:
            newest = await self._log.newest(parent)
            if newest is None:
                continue  # unknown: the decision cancels the child
            queue = parse_job_subject(newest.subject).queue
            note = Dependent(
                job_id=parent, queue=queue, child=child.job_id, at=utcnow(), actor=SCHEDULER_ACTOR
            )
            await self._log.append(note)
        await self.decide(child.job_id)

    async def _settled(self, parent: Settled) -> None:
        """Decide every child noted on a parent that ended."""
        children: dict[str, None] = {}
        for stored in await self._log.history(parent.job_id):
            if isinstance(stored.event, Dependent):
                children[stored.event.child] = None
        for child in children:
            await self.decide(child)

    async def decide(self, child: str) -> None:
        """Release or cancel ``child`` if its parents' states say so; nothing otherwise. A
        child canceled here that has children of its own is announced ``settled`` in turn
        (the cascade), as whoever ends a job does."""
        history = await self._log.history(child)
        events = [s.event for s in history if s.event is not None]
        parents: dict[str, JobState | None] = {}
        for parent in parents_of(events):
            parents[parent] = fold_history(await self._log.history(parent))
        result = await self._log.command(
            child,
            lambda state, seen: decide_dependencies(state, seen, parents=parents, now=utcnow()),
            history=history,
        )
        for appended in result.appended:
            if not appended.duplicate:
                log.info(
                    "%s %s: %s",
                    appended.event.kind.value,
                    child,
                    getattr(appended.event, "reason", None) or "every parent succeeded",
                )
        ended = result.state is not None and result.state.status.is_terminal
        if ended or any(isinstance(a.event, Canceled) for a in result.appended):
            # The cascade, done again on every redelivery: a crash loses no announcement.
            await self._log.announce_settled(child, actor=SCHEDULER_ACTOR)
