"""The event log as services use it: append an event, read a job's history, carry out a
command, on top of the log port (:mod:`ferrisqueue.log.port`).

:class:`EventLog` is the port with FerrisQueue's events on it. Its event-level operations
(:meth:`~EventLog.append`, :meth:`~EventLog.command`, :meth:`~EventLog.history`,
:meth:`~EventLog.newest`) are written once here over the port's primitives, so the NATS
adapter (:class:`ferrisqueue.log.natslog.NatsLog`) and the in-memory log
(:class:`ferrisqueue.log.memlog.MemoryLog`) behave alike by construction: what differs between
them is only how a message is stored, read and delivered.

Errors are FerrisQueue's (:mod:`ferrisqueue.errors`), so callers can tell "definitely not
stored" (:class:`PublishRejected`, :class:`NatsUnavailable`) from "maybe stored"
(:class:`PublishOutcomeUnknown`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic

from ferrisqueue.domain.commands import Decision, E, Rejection
from ferrisqueue.domain.dependencies import has_children, settled
from ferrisqueue.domain.events import BaseEvent, encode_event, utcnow
from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.stored import StoredEvent, fold_history
from ferrisqueue.domain.subjects import EVENT_STREAM, job_history_filter
from ferrisqueue.errors import ConcurrentChange, PayloadTooLarge
from ferrisqueue.log.port import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    MSG_ID,
    LogPort,
)


def _headers(
    event: BaseEvent, after_seq: int | None, extra: Mapping[str, str] | None
) -> dict[str, str]:
    headers = {**extra, MSG_ID: event.dedup_key()} if extra else {MSG_ID: event.dedup_key()}
    if after_seq is not None:
        # Optimistic concurrency over all of the job's subjects (every event kind).
        headers[EXPECTED_LAST_SUBJECT_SEQ] = str(after_seq)
        headers[EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] = job_history_filter(event.job_id)
    return headers


COMMAND_TRIES = 5
"""How often :meth:`EventLog.command` reads, decides and appends before it gives up.

Every try that fails does so because another writer appended to the same job in between
(a worker's ``started`` / ``progress`` / outcome, a fired timer's ``released``, another
operator), so the job made progress and the next decision is made on newer facts; often it
is then a rejection (the job finished) and the command ends. A job's writers are few and
mostly take turns, so a job that changes five times inside five read-to-append windows
(a few milliseconds each) is one whose handler reports progress in a tight loop, or a
storm of duplicate commands; then the caller is told so (:class:`ConcurrentChange`: the
gateway answers 503 with ``Retry-After``, a worker leaves the message for redelivery, a
dead-letter action reports the job as skipped) rather than spinning. Five is the most any
command used before they shared this loop (cancel; start used 3, redrive and purge 2), so
no command gives up sooner than it did. No pause between tries: a conflict is resolved by
reading the job again, not by waiting for it.
"""

Decide = Callable[[JobState | None, Sequence[BaseEvent]], Decision[E]]
"""A command's decision on a job's folded state and decoded history (see
:mod:`ferrisqueue.domain.commands`); called again on fresher facts after a conflict."""


@dataclass(frozen=True, slots=True)
class Appended:
    """An event a command appended, and where the log holds it."""

    event: BaseEvent
    seq: int
    duplicate: bool
    """The log already held an event with its dedup key (within the 2-minute window) and
    answered with that one's earlier sequence: nothing new was stored."""


@dataclass(frozen=True, slots=True)
class CommandResult(Generic[E]):
    """What :meth:`EventLog.command` did: the last decision and the facts it was made on."""

    state: JobState | None
    """The job's state the last decision was made on (before its events)."""
    history: list[StoredEvent]
    """The job's history that state was folded from."""
    decision: Decision[E]
    appended: tuple[Appended, ...]
    """Every event this command stored, over all its tries, in order: an earlier try may
    have stored some of its events before a conflict stopped it."""

    @property
    def rejection(self) -> Rejection | None:
        return self.decision if isinstance(self.decision, Rejection) else None

    @property
    def events(self) -> tuple[E, ...]:
        """The events of the last decision (all appended), or none if it was a rejection."""
        return () if isinstance(self.decision, Rejection) else self.decision


class EventLog(LogPort):
    """The log port with FerrisQueue's events on it: append events and read a job's history.

    Abstract: the NATS adapter and the in-memory log implement the port's primitives."""

    def __init__(self, *, max_event_bytes: int = 512 * 1024) -> None:
        self._max_event_bytes = max_event_bytes

    async def append(
        self,
        event: BaseEvent,
        *,
        after_seq: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """Publish ``event`` and wait for the log to store it; returns its stream sequence.

        The ``Nats-Msg-Id`` header is the event's dedup key, so appending the same event
        again (after a timeout, say) stores it once and returns the original sequence.
        With ``after_seq``, the append is guarded: it is stored only if the job's newest
        event is still the one at ``after_seq``, else :class:`ConcurrentChange`.
        ``headers`` are stored with the event as they are (the job's W3C trace context,
        see :mod:`ferrisqueue.tracing`); the log's own headers win over them.
        """
        body = encode_event(event)
        if len(body) > self._max_event_bytes:
            raise PayloadTooLarge(
                f"{event.kind.value} event of {len(body)} bytes exceeds the limit of "
                f"{self._max_event_bytes} bytes"
            )
        # Without Nats-Expected-Stream: no other stream can store fq.job.> (the server
        # refuses streams whose subjects overlap), and a header is kept with the event and
        # parsed again on every read of it (each event is read at least by the projector).
        return await self.store(
            event.subject, body, headers=_headers(event, after_seq, headers), stream=EVENT_STREAM
        )

    async def command(
        self,
        job_id: str,
        decide: Decide[E],
        *,
        history: list[StoredEvent] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CommandResult[E]:
        """Carry out one command on a job: read its history, fold it, ``decide``, and
        append the decided events, each guarded by the job's newest sequence (the first by
        the last one read, each further one by its predecessor's), so the events land only
        on the state they were decided on. If another writer appended in between
        (:class:`ConcurrentChange`), read and decide again, at most :data:`COMMAND_TRIES`
        times; then :class:`ConcurrentChange` is raised. A :class:`Rejection` ends the
        command with nothing (more) appended.

        ``history`` is one the caller already holds, or presumes (a worker presumes a job
        whose ``submitted`` it was just delivered has nothing else yet): the first decision
        is made on it without a read. If it is out of date, the guard refuses the append
        and the command reads the real one, so a wrong guess costs a round trip, never a
        wrong event.

        ``headers`` go with every appended event (see :meth:`append`).

        Callers never retry a command themselves; what they do around it (an HTTP answer,
        an ack, removing a dead letter or a timer) follows from the returned result.
        """
        appended: list[Appended] = []
        for _ in range(COMMAND_TRIES):
            if history is None:
                history = await self.history(job_id)
            state = fold_history(history)
            decision = decide(state, [s.event for s in history if s.event is not None])
            if isinstance(decision, Rejection):
                return CommandResult(state, history, decision, tuple(appended))
            last = history[-1].seq if history else 0
            try:
                for event in decision:
                    seq = await self.append(event, after_seq=last, headers=headers)
                    # A duplicate answers with the original's (earlier) sequence; the
                    # job's newest event is still the one at ``last``.
                    appended.append(Appended(event, seq, duplicate=seq <= last))
                    last = max(last, seq)
            except ConcurrentChange:
                history = None  # someone else appended: look again
                continue
            return CommandResult(state, history, decision, tuple(appended))
        raise ConcurrentChange(f"job {job_id} kept changing; retry")

    async def newest(self, job_id: str) -> StoredEvent | None:
        """The newest stored message of one job (one request), or None if it has none."""
        raw = await self.read(EVENT_STREAM, job_history_filter(job_id))
        return None if raw is None else StoredEvent.of(raw)

    async def history(self, job_id: str) -> list[StoredEvent]:
        """Every stored message of one job, in log order (read straight from the stream)."""
        found: list[StoredEvent] = []
        while raw := await self.read(
            EVENT_STREAM, job_history_filter(job_id), from_seq=found[-1].seq + 1 if found else 1
        ):
            found.append(StoredEvent.of(raw))
        return found

    async def announce_settled(
        self, job_id: str, *, actor: str, headers: Mapping[str, str] | None = None
    ) -> bool:
        """If job ``job_id`` has ended and a child waits for it (a ``dependent`` note), note
        ``settled`` for the dependency gate (:mod:`scheduler.dependencies`); whether it did.

        For whoever stored a job's end without knowing its history up to it (a cancel, a
        dead-lettering, a redelivered job a crashed worker had finished): call it *after*
        the end is stored, so that a note this read misses came after the end, and the gate
        decides that child when it notes it. The note's dedup key makes a repeat one
        message."""
        history = await self.history(job_id)
        state = fold_history(history)
        events = [s.event for s in history if s.event is not None]
        if state is None or not state.status.is_terminal or not has_children(events):
            return False
        await self.append(settled(events[-1], actor=actor, now=utcnow()), headers=headers)
        return True
