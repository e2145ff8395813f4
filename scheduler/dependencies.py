"""The dependency gate: releases a job that waits for its parents once they all succeeded,
and cancels it when one of them never will.

A job with ``depends_on`` is created ``awaiting``, which no dispatch consumer delivers. The
gate reads, from the durable pull consumer ``fq-scheduler-deps`` on ``FQ_EVENTS`` (shared by
every scheduler instance), each ``awaiting`` event and each event that may settle a parent
(``succeeded``, ``failed``, ``dead_lettered``, ``canceled``), and acks it once handled:

* ``awaiting`` of a child: for each parent the log knows, append a ``dependent`` event on the
  *parent* (``child``: the child's id; ``Nats-Msg-Id`` ``<parent>:dependent:<child>``), then
  decide the child (below). A parent the log does not know cancels the child.
* a settling event of a job: if that job has a ``dependent`` event (the last message on
  ``fq.job.<queue>.<id>.dependent``, read for a whole burst in one batched direct get, so a
  job nobody waits for costs no decode and no read of its own), read its history and decide
  each child it names.
* deciding a child: fold its history and each parent's, then
  :func:`~ferrisqueue.domain.dependencies.decide_dependencies` through
  :meth:`EventLog.command`: ``released`` (attempt 0) when all parents completed, ``canceled``
  naming a parent that failed for good or was canceled, else nothing. The appends are
  guarded by the child's newest sequence.

The index of waiting children is therefore the log itself: a parent's history lists its
children. Nothing is kept in memory, so a restart loses nothing, and any number of
instances can run.

Why no child is stuck: the ``dependent`` note is stored *before* the gate reads the parent,
and a parent's settling event is stored before the gate looks for its notes. Whichever of the
two is stored first, the handling of the other sees it: either the child's decision reads the
parent already settled, or the parent's handling finds the note. A crash before the ack
repeats the handling (the note is deduplicated by its ``Nats-Msg-Id`` within the 2-minute
window; a later repeat is a second note the fold ignores).

Why none is released twice: every release or cancel is decided on the child's folded state
and appended under its newest sequence. Two deciders racing (two instances, or a repeat) are
serialised by that guard; the second reads the job released and decides nothing. The fold
rejects a second ``released`` anyway (the job is queued, no longer waiting).
"""

from __future__ import annotations

import asyncio
import logging

from ferrisqueue.domain.dependencies import (
    decide_dependencies,
    parents_of,
    settles_children,
)
from ferrisqueue.domain.events import (
    SCHEDULER_ACTOR,
    Awaiting,
    BaseEvent,
    Dependent,
    EventKind,
    utcnow,
)
from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.stored import StoredEvent, fold_history
from ferrisqueue.domain.subjects import EVENT_STREAM, job_subject, parse_job_subject
from ferrisqueue.errors import NatsUnavailable
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.port import Delivery, Pulling
from ferrisqueue.log.service_loop import ConsumerLoop

log = logging.getLogger(__name__)

DEPENDENCY_CONSUMER = "fq-scheduler-deps"

BATCH = 256
"""Most events asked for per pull request."""
LINGER = Pulling(linger=0.02)
"""A burst waits 20 ms to fill up: each burst costs a pull request and a batched read of
its jobs' notes, and 20 ms is little beside a child's wait for its parents."""


class DependencyGate(ConsumerLoop):
    """Releases or cancels jobs that wait for their parents, from the events in the log.

    A :class:`~ferrisqueue.log.service_loop.ConsumerLoop`: an event whose handling failed
    (NATS away) is nak'd with backoff and comes back; the gate goes on with the others."""

    name = "dependency gate"
    stream = EVENT_STREAM
    consumer = DEPENDENCY_CONSUMER
    pulling = LINGER

    def __init__(self, event_log: EventLog, *, batch: int = BATCH) -> None:
        super().__init__(event_log, request_size=batch)
        self._log = event_log
        self._noted: set[str] | None = None
        """Of the current burst's settling events, the note subjects that hold a note: the
        jobs some child waits for (None: not known, each event reads its own)."""

    async def handle_burst(self, burst: list[Delivery]) -> None:
        """Handle a burst concurrently: no order between events is needed (every decision
        reads the log afresh and is guarded). Which of its jobs have children is read first,
        in one request for the whole burst: almost every settling event is a job nobody
        waits for, and it then costs neither a decode nor a read of its own."""
        notes = [subject for msg in burst if (subject := _notes_of(msg.subject))]
        try:
            self._noted = await self._log.holding(EVENT_STREAM, notes) if notes else set()
        except NatsUnavailable as exc:
            log.debug("%s: each event reads its own notes: %s", self.name, exc)
            self._noted = None
        try:
            await asyncio.gather(*(self.process(msg) for msg in burst))
        finally:
            self._noted = None

    async def handle(self, msg: Delivery) -> None:
        notes = _notes_of(msg.subject)
        if notes is not None and self._noted is not None and notes not in self._noted:
            return  # a settling event of a job no child waits for
        stored = StoredEvent.of(msg)
        event = stored.event
        if event is None:
            return  # the workers and the projector deal with poison
        if isinstance(event, Awaiting):
            await self._register(event)
        elif settles_children(event):
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

    async def _settled(self, parent: BaseEvent) -> None:
        """Decide every child noted on a parent that just succeeded, failed or was canceled."""
        notes = job_subject(parent.queue, parent.job_id, EventKind.DEPENDENT)
        if await self._log.read(EVENT_STREAM, notes) is None:
            return  # no child waits for it: the common case, one message get
        children: dict[str, None] = {}
        for stored in await self._log.history(parent.job_id):
            if isinstance(stored.event, Dependent):
                children[stored.event.child] = None
        for child in children:
            await self.decide(child)

    async def decide(self, child: str) -> None:
        """Release or cancel ``child`` if its parents' states say so; nothing otherwise."""
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


def _notes_of(subject: str) -> str | None:
    """The subject of the ``dependent`` notes on the job of a settling event's ``subject``
    (None for an ``awaiting`` event, or a subject that names no valid job)."""
    try:
        tokens = parse_job_subject(subject)
    except ValueError:
        return None
    if tokens.event == EventKind.AWAITING:
        return None
    return job_subject(tokens.queue, tokens.job_id, EventKind.DEPENDENT)
