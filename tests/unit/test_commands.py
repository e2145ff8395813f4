"""The command layer: for every starting state, what each command decides, and that every
event it decides is one the fold applies.

Pure and clock-free like the fold: ``now`` and every event time are fixed datetimes. The
starting states are the fold table's (``tests/unit/test_fold.py``), so both tables speak of
the same jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from ferrisqueue.domain.commands import (
    CANCELED_BEFORE_RUN,
    NO_SUCH_JOB,
    Decision,
    Rejection,
    decide_cancel,
    decide_purge,
    decide_redrive,
    decide_release,
    decide_start,
    release_abandoned,
)
from ferrisqueue.domain.events import (
    BaseEvent,
    Canceled,
    CancelRequested,
    Purged,
    Redriven,
    Released,
    Started,
)
from ferrisqueue.domain.fold import apply, fold
from ferrisqueue.domain.states import PendingReason
from tests.unit.test_fold import (
    JOB,
    QUEUE,
    STARTING_HISTORIES,
    T0,
    cancel_requested,
    dead_lettered,
    failed,
    scheduled,
    submitted,
    t,
)

NOW = T0 + timedelta(hours=2)
"""When the command is decided: later than every event of every starting history."""

TRIGGER = 41
"""The stream sequence of the runnable message a worker was delivered."""

HISTORIES: dict[str, list[BaseEvent]] = {
    **STARTING_HISTORIES,
    "pending+cancel_requested": [submitted(), cancel_requested(t(1))],
    "running+cancel_requested": [*STARTING_HISTORIES["running"], cancel_requested(t(2))],
    "undecodable": [dead_lettered(T0, reason="undecodable job: body is not JSON")],
}
"""The fold table's starting states, and the few more that some commands tell apart."""

Expected = tuple[str, ...] | Rejection
"""The kinds of the events a command decides, in order, or the rejection it answers."""


def _kinds(decision: Decision[Any]) -> Expected:
    if isinstance(decision, Rejection):
        return decision
    return tuple(event.event for event in decision)


def _all_applied(history: list[BaseEvent], decision: Decision[Any]) -> None:
    """Every decided event is a transition the fold applies, in order: a command never
    appends what the state machine would reject."""
    if isinstance(decision, Rejection):
        return
    state = fold(history)
    for event in decision:
        transition = apply(state, event)
        assert transition.applied, transition.rejected_because
        state = transition.state


# --- start: a worker about to run a delivered job ------------------------------------------


def _next_attempt(history: list[BaseEvent]) -> int:
    state = fold(history)
    return (state.attempts if state else 0) + 1


def _start(history: list[BaseEvent], attempt: int, trigger_seq: int = TRIGGER) -> Decision[Started]:
    creation = submitted()
    return decide_start(
        fold(history),
        history,
        job=creation,
        attempt=attempt,
        trigger_seq=trigger_seq,
        worker="w9",
        now=NOW,
    )


START: dict[str, Expected] = {
    # The log does not show the creation the delivered message is: start, the fold judges.
    "none": ("started",),
    "pending-queued": ("started",),
    "pending-scheduled": ("started",),
    "pending-retrying": ("started",),
    "running": ("started",),  # the next attempt: the previous one lost its lease
    "completed": Rejection("the job is completed"),
    "failed": Rejection("the job is failed"),
    "failed+dead_lettered": Rejection("the job is failed"),
    "canceled": Rejection("the job is canceled"),
    "pending+cancel_requested": Rejection("a cancel was requested"),
    "running+cancel_requested": Rejection("a cancel was requested"),
    "undecodable": Rejection("the job is failed"),
}


@pytest.mark.parametrize(("name", "expected"), START.items(), ids=list(START))
def test_a_worker_starts_the_next_attempt_only_of_a_job_that_may_run(
    name: str, expected: Expected
) -> None:
    history = HISTORIES[name]

    decision = _start(history, _next_attempt(history))

    assert _kinds(decision) == expected
    if name != "none":  # a start of an unknown job is left to the fold, which rejects it
        _all_applied(history, decision)


def test_started_names_the_attempt_the_worker_and_the_message_it_runs() -> None:
    decision = _start([submitted()], 1)

    assert decision == (
        Started(
            job_id=JOB,
            queue=QUEUE,
            at=NOW,
            attempt=1,
            worker="w9",
            trigger_seq=TRIGGER,
            actor="worker:w9",
        ),
    )


def test_a_duplicate_delivery_of_an_attempt_already_started_does_not_run() -> None:
    history = [submitted(), Started(job_id=JOB, queue=QUEUE, at=t(1), attempt=1, worker="w1")]

    decision = _start(history, 1, trigger_seq=TRIGGER + 1)

    assert decision == Rejection("attempt 1 already started (the job is at attempt 1)")


def test_a_message_whose_own_attempt_was_lost_runs_the_next_attempt() -> None:
    # A nats-server killed with -9 forgot the delivery and its count: the same message comes
    # again as delivery 1, while the attempt it started stays `running` for ever otherwise.
    lost = Started(job_id=JOB, queue=QUEUE, at=t(1), attempt=1, worker="w1", trigger_seq=TRIGGER)

    decision = _start([submitted(), lost], 1)

    assert not isinstance(decision, Rejection)
    assert [event.attempt for event in decision] == [2]


def test_an_attempt_another_message_started_is_not_taken_for_lost() -> None:
    other = Started(job_id=JOB, queue=QUEUE, at=t(1), attempt=1, worker="w1", trigger_seq=7)

    assert isinstance(_start([submitted(), other], 1), Rejection)


# --- cancel: someone asks for a job to stop ------------------------------------------------


CANCEL: dict[str, Expected] = {
    "none": Rejection(NO_SUCH_JOB),
    "pending-queued": ("cancel_requested", "canceled"),
    "pending-scheduled": ("cancel_requested", "canceled"),
    "pending-retrying": ("cancel_requested", "canceled"),
    "running": ("cancel_requested",),  # its worker records `canceled`
    "completed": Rejection(f"job {JOB} is already completed"),
    "failed": Rejection(f"job {JOB} is already failed"),
    "failed+dead_lettered": Rejection(f"job {JOB} is already failed"),
    "canceled": Rejection(f"job {JOB} is already canceled"),
    "pending+cancel_requested": ("canceled",),  # an earlier request's cancel is finished
    "running+cancel_requested": (),  # asked already: nothing more to say to the worker
    "undecodable": Rejection(f"job {JOB} is already failed"),
}


@pytest.mark.parametrize(("name", "expected"), CANCEL.items(), ids=list(CANCEL))
def test_a_cancel_stops_a_pending_job_at_once_and_asks_a_running_ones_worker(
    name: str, expected: Expected
) -> None:
    history = HISTORIES[name]

    decision = decide_cancel(fold(history), actor="ops", now=NOW)

    assert _kinds(decision) == expected
    _all_applied(history, decision)


def test_a_cancel_names_who_asked_and_why_the_job_never_ran() -> None:
    decision = decide_cancel(fold([submitted()]), actor="key:ops", now=NOW)

    assert decision == (
        CancelRequested(job_id=JOB, queue=QUEUE, at=NOW, actor="key:ops"),
        Canceled(job_id=JOB, queue=QUEUE, at=NOW, reason=CANCELED_BEFORE_RUN, actor="key:ops"),
    )


# --- redrive and purge: operators act on dead letters --------------------------------------


def _redrive(history: list[BaseEvent]) -> Decision[Redriven]:
    return decide_redrive(fold(history), history, actor="ops", reason="fixed", now=NOW)


def _purge(history: list[BaseEvent]) -> Decision[Purged]:
    return decide_purge(fold(history), actor="ops", reason="fixed", now=NOW)


def _not_dead(status: str) -> Rejection:
    return Rejection(f"not dead-lettered (the job is {status})")


NOT_DEAD: dict[str, Expected] = {
    "none": Rejection(NO_SUCH_JOB),
    "pending-queued": _not_dead("pending"),
    "pending-scheduled": _not_dead("pending"),
    "pending-retrying": _not_dead("pending"),
    "running": _not_dead("running"),
    "completed": _not_dead("completed"),
    "failed": _not_dead("failed"),  # its dead-lettering is not stored (yet)
    "canceled": _not_dead("canceled"),
    "pending+cancel_requested": _not_dead("pending"),
    "running+cancel_requested": _not_dead("running"),
}
REDRIVE: dict[str, Expected] = {
    **NOT_DEAD,
    "failed+dead_lettered": ("redriven",),
    # Nothing a worker could run: only a purge makes sense.
    "undecodable": Rejection(
        "its submission was never decodable, so there is nothing to run; purge it"
    ),
}
PURGE: dict[str, Expected] = {
    **NOT_DEAD,
    "failed+dead_lettered": ("purged",),
    "undecodable": ("purged",),
}


DEAD_LETTER_CASES = [
    pytest.param(decide, name, expected, id=f"{label}--{name}")
    for label, decide, table in (("redrive", _redrive, REDRIVE), ("purge", _purge, PURGE))
    for name, expected in table.items()
]


@pytest.mark.parametrize(("decide", "name", "expected"), DEAD_LETTER_CASES)
def test_only_a_dead_lettered_job_is_redriven_or_purged(
    decide: Callable[[list[BaseEvent]], Decision[Any]], name: str, expected: Expected
) -> None:
    history = HISTORIES[name]

    decision = decide(history)

    assert _kinds(decision) == expected
    _all_applied(history, decision)


def test_a_redrive_starts_a_fresh_budget_after_the_attempts_made_and_names_who_did_it() -> None:
    decision = _redrive(HISTORIES["failed+dead_lettered"])

    assert decision == (
        Redriven(job_id=JOB, queue=QUEUE, at=NOW, attempt=1, actor="ops", reason="fixed"),
    )


def test_a_purge_names_who_did_it() -> None:
    decision = _purge(HISTORIES["failed+dead_lettered"])

    assert decision == (Purged(job_id=JOB, queue=QUEUE, at=NOW, actor="ops", reason="fixed"),)


# --- release: a wait came due --------------------------------------------------------------

RUN_AT = T0 + timedelta(days=1)  # the fold table's `scheduled(T0)` runs a day later
RETRY_AT = t(30)  # and its retrying job's failure retries at t(30)

Wait = tuple[PendingReason, int, datetime]
WAITS: dict[str, Wait] = {
    "scheduled": (PendingReason.SCHEDULED, 0, RUN_AT),
    "retry-1": (PendingReason.RETRYING, 1, RETRY_AT),
}


def _release(history: Sequence[BaseEvent], wait: Wait) -> Decision[Released]:
    waiting, attempt, due = wait
    return decide_release(fold(history), waiting=waiting, attempt=attempt, due=due)


RELEASED = ("released",)
RELEASE: dict[str, dict[str, Expected]] = {
    "none": {"scheduled": Rejection(NO_SUCH_JOB), "retry-1": Rejection(NO_SUCH_JOB)},
    "pending-queued": {
        "scheduled": Rejection("the job is queued after attempt 0, not scheduled after attempt 0"),
        "retry-1": Rejection("the job is queued after attempt 0, not retrying after attempt 1"),
    },
    "pending-scheduled": {
        "scheduled": RELEASED,
        "retry-1": Rejection("the job is scheduled after attempt 0, not retrying after attempt 1"),
    },
    "pending-retrying": {
        "scheduled": Rejection(
            "the job is retrying after attempt 1, not scheduled after attempt 0"
        ),
        "retry-1": RELEASED,
    },
    "running": dict.fromkeys(WAITS, Rejection("the job is running")),
    "completed": dict.fromkeys(WAITS, Rejection("the job is completed")),
    "failed": dict.fromkeys(WAITS, Rejection("the job is failed")),
    "failed+dead_lettered": dict.fromkeys(WAITS, Rejection("the job is failed")),
    "canceled": dict.fromkeys(WAITS, Rejection("the job is canceled")),
    "pending+cancel_requested": dict.fromkeys(WAITS, Rejection("a cancel was requested")),
    "running+cancel_requested": dict.fromkeys(WAITS, Rejection("the job is running")),
    "undecodable": dict.fromkeys(WAITS, Rejection("the job is failed")),
}


RELEASE_CASES = [
    pytest.param(name, wait, expected, id=f"{name}--{wait}")
    for name, row in RELEASE.items()
    for wait, expected in row.items()
]


@pytest.mark.parametrize(("name", "wait", "expected"), RELEASE_CASES)
def test_only_a_job_pending_for_exactly_this_wait_is_released(
    name: str, wait: str, expected: Expected
) -> None:
    history = HISTORIES[name]

    decision = _release(history, WAITS[wait])

    assert _kinds(decision) == expected
    _all_applied(history, decision)


def test_a_release_is_stored_at_its_due_time_after_the_attempts_made() -> None:
    decision = _release(HISTORIES["pending-retrying"], WAITS["retry-1"])

    assert decision == (
        Released(job_id=JOB, queue=QUEUE, at=RETRY_AT, attempt=1, actor="scheduler"),
    )


def test_a_wait_for_another_time_releases_nothing() -> None:
    # A second `scheduled` with another time, for a job that already exists.
    later = (PendingReason.SCHEDULED, 0, RUN_AT + timedelta(hours=1))

    decision = _release([scheduled(T0)], later)

    assert decision == Rejection(f"the job waits until {RUN_AT}, not {later[2]}")


def test_the_failure_of_an_attempt_that_lost_its_lease_releases_nothing() -> None:
    # Attempt 2 began while attempt 1 still ran; attempt 1's failure then asks for a retry.
    history = [
        submitted(),
        Started(job_id=JOB, queue=QUEUE, at=t(1), attempt=1, worker="w1"),
        Started(job_id=JOB, queue=QUEUE, at=t(5), attempt=2, worker="w2"),
        failed(t(6), attempt=1, retry_at=RETRY_AT),
    ]

    assert _release(history, WAITS["retry-1"]) == Rejection("the job is running")


ABANDONED: dict[str, bool] = {
    "none": True,
    "pending-queued": False,
    "pending-scheduled": False,
    "pending-retrying": False,
    "running": False,
    "completed": True,
    "failed": True,
    "failed+dead_lettered": True,
    "canceled": True,
    "pending+cancel_requested": True,
    "running+cancel_requested": True,
    "undecodable": True,
}


@pytest.mark.parametrize(("name", "expected"), ABANDONED.items(), ids=list(ABANDONED))
def test_an_armed_release_is_withdrawn_once_the_job_is_finished_or_being_canceled(
    name: str, expected: bool
) -> None:
    assert release_abandoned(fold(HISTORIES[name])) is expected


def test_every_table_covers_every_state() -> None:
    for table in (START, CANCEL, REDRIVE, PURGE, RELEASE, ABANDONED):
        assert set(table) == set(HISTORIES)
    for row in RELEASE.values():
        assert set(row) == set(WAITS)
