"""Commands: what may be done to a job, decided from its state alone.

The fold (:mod:`ferrisqueue.domain.fold`) says what a job *is*; this module says what may be done
to it. Each ``decide_*`` function takes the job's folded state (``None`` for a job the log
does not know), its history where the decision needs more than the state, and the
command's own inputs, and returns either the events to append or a :class:`Rejection`
saying why not. Like the fold it is pure: no I/O, no clock (the time comes in as ``now``),
no randomness, so every decision is a row in a table test (``tests/unit/test_commands.py``).

Reading the job, folding it, appending the decision under the job's newest sequence and
deciding again when someone else got there first is :meth:`EventLog.command
<ferrisqueue.log.eventlog.EventLog.command>`; a caller only chooses the ``decide_*`` function.
What a caller does around a decision (an HTTP answer, acking a message, removing a dead
letter or a timer) stays with the caller.

The fold remains the last line of defence: an event appended anyway (by a plain ``nats
pub``, or by a writer that decided on an older state) is rejected by it, not applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from ferrisqueue.domain.events import (
    SCHEDULER_ACTOR,
    BaseEvent,
    Canceled,
    CancelRequested,
    JobSpec,
    Purged,
    Redriven,
    Released,
    Started,
    worker_actor,
)
from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.states import JobStatus, PendingReason

E = TypeVar("E", bound=BaseEvent)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A command that must not be carried out, and why (said to operators and clients)."""

    reason: str


Decision = tuple[E, ...] | Rejection
"""The events to append, in order, or why none may be."""

NO_SUCH_JOB = "no such job in the event log"

CANCELED_BEFORE_RUN = "canceled before it ran"
"""The reason of a ``canceled`` recorded before the job's handler began."""


def decide_start(
    state: JobState | None,
    history: Sequence[BaseEvent],
    *,
    job: JobSpec,
    attempt: int,
    trigger_seq: int,
    worker: str,
    now: datetime,
) -> Decision[Started]:
    """A worker about to run ``attempt`` of ``job``, delivered by the message at
    ``trigger_seq``: ``started``, or why the job must not run.

    Not run: a finished job, one whose cancel was requested, or one already at this attempt
    (a duplicate delivery that another worker started). But when the job's running attempt
    was started from this very message, that attempt was lost (JetStream delivers a message
    again only when its lease expired, or when a restarted server forgot the delivery and
    its count): the next attempt runs instead of the job staying ``running`` for ever.

    ``state`` is ``None`` only when the log cannot show the job's creation, which the
    delivered message itself is: the worker starts it and the fold judges the event.
    """
    if state is not None:
        if _lost_by(state, history, trigger_seq):
            attempt = max(attempt, state.attempts + 1)
        if state.status.is_terminal:
            return Rejection(f"the job is {state.status.value}")
        if state.cancel_requested:
            return Rejection("a cancel was requested")
        if attempt <= state.attempts:
            return Rejection(
                f"attempt {attempt} already started (the job is at attempt {state.attempts})"
            )
    started = Started(
        job_id=job.job_id,
        queue=job.queue,
        at=now,
        attempt=attempt,
        worker=worker,
        trigger_seq=trigger_seq,
        actor=worker_actor(worker),
    )
    return (started,)


def _lost_by(state: JobState, history: Sequence[BaseEvent], trigger_seq: int) -> bool:
    """Whether the job's running attempt was started from the message at ``trigger_seq``."""
    if state.status is not JobStatus.RUNNING:
        return False
    start = next((e for e in reversed(history) if isinstance(e, Started)), None)
    if start is None:
        return False
    return start.trigger_seq == trigger_seq and start.attempt == state.attempts


def decide_cancel(
    state: JobState | None, *, actor: str, now: datetime
) -> Decision[CancelRequested | Canceled]:
    """``actor`` asks to cancel the job: ``cancel_requested`` (unless it already was), then,
    for a pending job, ``canceled`` at once. A running job is canceled by its worker, which
    learns of the request from the stored event. A finished job is rejected."""
    if state is None:
        return Rejection(NO_SUCH_JOB)
    if state.status.is_terminal:
        return Rejection(f"job {state.job_id} is already {state.status}")
    events: list[CancelRequested | Canceled] = []
    if not state.cancel_requested:
        events.append(CancelRequested(job_id=state.job_id, queue=state.queue, at=now, actor=actor))
    if state.status is JobStatus.PENDING:
        # No worker can start it any more: every ``started`` is guarded by the sequence
        # before the request, so it is canceled now rather than when a worker sees it.
        events.append(
            Canceled(
                job_id=state.job_id,
                queue=state.queue,
                at=now,
                reason=CANCELED_BEFORE_RUN,
                actor=actor,
            )
        )
    return tuple(events)


def decide_redrive(
    state: JobState | None,
    history: Sequence[BaseEvent],
    *,
    actor: str,
    reason: str | None,
    now: datetime,
) -> Decision[Redriven]:
    """An operator (``actor``) sends a dead-lettered job back to its queue: ``redriven``, with the
    attempts made so far (its fresh budget of attempts starts there)."""
    if (why := _not_dead(state)) is not None:
        return why
    assert state is not None
    spec = next((event for event in history if isinstance(event, JobSpec)), None)
    if spec is None:
        # Dead-lettered because its submission could not be decoded: there is nothing a
        # worker could run, so only a purge makes sense.
        return Rejection("its submission was never decodable, so there is nothing to run; purge it")
    redriven = Redriven(
        job_id=state.job_id,
        queue=state.queue,
        at=now,
        attempt=state.attempts,
        priority=spec.priority,  # back in the job's own lane
        actor=actor,
        reason=reason,
    )
    return (redriven,)


def decide_purge(
    state: JobState | None, *, actor: str, reason: str | None, now: datetime
) -> Decision[Purged]:
    """An operator (``actor``) removes a dead-lettered job from the dead letters for good:
    ``purged`` (the job stays ``failed``)."""
    if (why := _not_dead(state)) is not None:
        return why
    assert state is not None
    return (Purged(job_id=state.job_id, queue=state.queue, at=now, actor=actor, reason=reason),)


def _not_dead(state: JobState | None) -> Rejection | None:
    """Why a dead-letter action does not apply to the job, or ``None`` when it does."""
    if state is None:
        return Rejection(NO_SUCH_JOB)
    if not state.dead_lettered:
        return Rejection(f"not dead-lettered (the job is {state.status.value})")
    return None


def decide_release(
    state: JobState | None, *, waiting: PendingReason, attempt: int, due: datetime
) -> Decision[Released]:
    """A wait came due (``scheduled`` at ``run_at``, or ``failed`` with ``retry_at``): the
    ``released`` event after ``attempt`` attempts, stored at ``due``, or why the job no
    longer waits for it.

    The event is not appended by the caller: the scheduler arms a server timer, and the
    server stores the release at ``due`` (see "Time" in docs/architecture.md). Only a job
    still pending for exactly this wait (same sub-state, attempt and due time) is released,
    so a consumer replayed from the start of the log, or the ``failed`` of an attempt that
    lost its lease, releases nothing.
    """
    if state is None:
        return Rejection(NO_SUCH_JOB)
    if state.status is not JobStatus.PENDING:
        return Rejection(f"the job is {state.status.value}")
    if state.cancel_requested:
        return Rejection("a cancel was requested")
    if state.pending_reason is not waiting or state.attempts != attempt:
        now_waiting = state.pending_reason.value if state.pending_reason else "nothing"
        return Rejection(
            f"the job is {now_waiting} after attempt {state.attempts}, "
            f"not {waiting.value} after attempt {attempt}"
        )
    expected = state.run_at if waiting is PendingReason.SCHEDULED else state.retry_at
    if expected != due:
        return Rejection(f"the job waits until {expected}, not {due}")
    released = Released(
        job_id=state.job_id, queue=state.queue, at=due, attempt=attempt, actor=SCHEDULER_ACTOR
    )
    return (released,)


def release_abandoned(state: JobState | None) -> bool:
    """Whether a release armed for the job must be withdrawn: the job is unknown or
    finished, or a cancel is under way (a release would only be rejected by the fold, and
    the worker it reached would have to settle the cancel)."""
    return state is None or state.status.is_terminal or state.cancel_requested
