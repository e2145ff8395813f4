"""The status fold: a job's state is a pure function of its events.

No clock, no I/O: the projector folds the event log into the read store with it, and the
gateway folds a job's events straight from the log when the read store has not caught up yet,
so both always agree.

An event that would be an illegal transition (``succeeded`` after ``canceled``, a second
``submitted``, ...) is *rejected*: it stays in the log and in the job's timeline, marked with
the reason, but does not change the state. Stale events from an attempt that lost its lease
are treated the same way, except ``succeeded``: the work did happen, so it completes the job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ferrisqueue.domain.events import (
    Awaiting,
    BaseEvent,
    Canceled,
    CancelRequested,
    DeadLettered,
    Dependent,
    Failed,
    JobSpec,
    Progress,
    Purged,
    Redriven,
    Released,
    Scheduled,
    Settled,
    Started,
    Submitted,
    Succeeded,
    Throttled,
)
from ferrisqueue.domain.states import JobStatus, PendingReason

UNKNOWN_TYPE = "unknown"
"""The type of a job whose submission was undecodable."""


@dataclass(frozen=True, slots=True)
class JobState:
    """Everything known about one job after folding its events."""

    job_id: str
    queue: str
    type: str
    payload: dict[str, Any]
    status: JobStatus
    pending_reason: PendingReason | None
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    run_at: datetime | None = None
    retry_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    progress: float | None = None
    result: Any = None
    last_error: str | None = None
    cancel_requested: bool = False
    dead_lettered: bool = False
    submitted_by: str | None = None
    """The actor of the job's creation event (who submitted it)."""
    events_applied: int = 1


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of applying one event: the new state, or the old one and why not."""

    state: JobState | None
    applied: bool
    rejected_because: str | None = None


def _reject(state: JobState | None, event: BaseEvent, why: str | None = None) -> Transition:
    status = state.status.value if state else "unknown"
    return Transition(
        state, False, why or f"{event.kind.value} is not legal when the job is {status}"
    )


def apply(state: JobState | None, event: BaseEvent) -> Transition:
    """Apply one event to a job's state (``None`` before its first event)."""
    if state is None:
        if isinstance(event, JobSpec):
            return Transition(_created(event), True)
        if isinstance(event, DeadLettered):
            # A job whose submission could not even be decoded is known only by its id.
            return Transition(_undecodable(event), True)
        return _reject(None, event, f"{event.kind.value} for a job that was never submitted")
    if isinstance(event, Dependent | Settled):
        # Notes for the scheduler (a child waits for this job; it ended with children
        # waiting), legal in any state: counted, but they change nothing the job's owner
        # would see, not even ``updated_at``.
        return Transition(evolve(state, {"events_applied": state.events_applied + 1}), True)
    changes = _changes(state, event)
    if isinstance(changes, str):
        return _reject(state, event, changes or None)
    changes.update(updated_at=event.at, events_applied=state.events_applied + 1)
    return Transition(evolve(state, changes), True)


_SLOTS = tuple((name, getattr(JobState, name)) for name in JobState.__dataclass_fields__)
"""Each field's slot descriptor: reading and writing a slot through it skips the frozen
class's ``__setattr__`` and the name lookup."""


def evolve(state: JobState, changes: Mapping[str, Any]) -> JobState:
    """``dataclasses.replace(state, **changes)``, which was most of the fold's time: it
    inspects the fields and validates the arguments on every call; this copies the slots."""
    evolved = object.__new__(JobState)
    for name, slot in _SLOTS:
        slot.__set__(evolved, changes[name] if name in changes else slot.__get__(state))
    return evolved


def fold(events: Iterable[BaseEvent]) -> JobState | None:
    """The state after all ``events`` of one job, in log order."""
    state: JobState | None = None
    for event in events:
        state = apply(state, event).state
    return state


def _created(event: JobSpec) -> JobState:
    if isinstance(event, Scheduled):
        reason = PendingReason.SCHEDULED
    elif isinstance(event, Awaiting):
        reason = PendingReason.DEPENDENCIES
    else:
        reason = PendingReason.QUEUED
    return JobState(
        job_id=event.job_id,
        queue=event.queue,
        type=event.type,
        payload=event.payload,
        status=JobStatus.PENDING,
        pending_reason=reason,
        created_at=event.at,
        updated_at=event.at,
        run_at=event.run_at if isinstance(event, Scheduled) else None,
        submitted_by=event.actor,
    )


def _undecodable(event: DeadLettered) -> JobState:
    return JobState(
        job_id=event.job_id,
        queue=event.queue,
        type=UNKNOWN_TYPE,
        payload={},
        status=JobStatus.FAILED,
        pending_reason=None,
        created_at=event.at,
        updated_at=event.at,
        finished_at=event.at,
        last_error=event.reason,
        dead_lettered=True,
    )


def _changes(state: JobState, event: BaseEvent) -> dict[str, Any] | str:
    """The fields ``event`` changes, or the reason it is rejected ('' for the generic one).

    One :func:`evolve` per applied event (in :func:`apply`): the projector's hot path."""
    pending, running = state.status is JobStatus.PENDING, state.status is JobStatus.RUNNING
    active = pending or running
    match event:
        case Submitted() | Scheduled() | Awaiting():
            return "the job was already submitted"
        case Released(attempt=attempt) if (
            pending and state.pending_reason is not PendingReason.QUEUED
        ):
            if attempt != state.attempts:
                return (
                    f"release after attempt {attempt}, but the job is at attempt {state.attempts}"
                )
            return dict(pending_reason=PendingReason.QUEUED, run_at=None, retry_at=None)
        case Started(attempt=attempt) if active:
            if attempt <= state.attempts:
                return f"attempt {attempt} already started (the job is at attempt {state.attempts})"
            return dict(
                status=JobStatus.RUNNING,
                pending_reason=None,
                attempts=attempt,
                started_at=event.at,
                worker=event.worker,
                progress=None,
                run_at=None,
                retry_at=None,
            )
        case Progress(attempt=attempt) if running:
            if attempt != state.attempts:
                return f"progress from stale attempt {attempt} (current is {state.attempts})"
            return dict(progress=event.fraction)
        case Succeeded() if running:
            return dict(
                status=JobStatus.COMPLETED,
                result=event.result,
                finished_at=event.at,
                progress=1.0,
            )
        case Failed(attempt=attempt) if running:
            if attempt != state.attempts:
                return f"failure of stale attempt {attempt} (current is {state.attempts})"
            if event.retry_at is not None:
                return dict(
                    status=JobStatus.PENDING,
                    pending_reason=PendingReason.RETRYING,
                    retry_at=event.retry_at,
                    last_error=event.error,
                )
            return dict(status=JobStatus.FAILED, last_error=event.error, finished_at=event.at)
        case DeadLettered() if state.dead_lettered:
            # A repair after a crash (or the router and a worker both giving up on one
            # delivery) can store a second one: it is recorded, not counted again.
            return "the job is already dead-lettered"
        case DeadLettered() if active or state.status is JobStatus.FAILED:
            return dict(
                status=JobStatus.FAILED,
                pending_reason=None,
                dead_lettered=True,
                last_error=state.last_error if state.status is JobStatus.FAILED else event.reason,
                finished_at=state.finished_at or event.at,
            )
        case CancelRequested() if active:
            return dict(cancel_requested=True)
        case Canceled() if active:
            return dict(status=JobStatus.CANCELED, pending_reason=None, finished_at=event.at)
        case Redriven() if state.dead_lettered:
            return dict(
                status=JobStatus.PENDING,
                pending_reason=PendingReason.QUEUED,
                finished_at=None,
                dead_lettered=False,
                cancel_requested=False,
                progress=None,
            )
        case Purged() if state.dead_lettered:
            return dict(dead_lettered=False)
        case Throttled() if pending:
            return dict(pending_reason=PendingReason(event.reason))
        case Throttled() if running:
            # A redelivery of a job whose attempt was lost waits too: it stays running (its
            # next ``started`` says so) and the event only explains the gap.
            return {}
    return ""
