"""The status fold: every legal and every illegal transition, and the fold's guarantees.

Pure and clock-free: every event carries a fixed datetime built by the factories below.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferrisqueue.domain.events import (
    BaseEvent,
    Canceled,
    CancelRequested,
    DeadLettered,
    Failed,
    Progress,
    Purged,
    Redriven,
    Released,
    Scheduled,
    Started,
    Submitted,
    Succeeded,
)
from ferrisqueue.domain.fold import UNKNOWN_TYPE, JobState, Transition, apply, fold
from ferrisqueue.domain.states import JobStatus, PendingReason

JOB = "job-1"
QUEUE = "default"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PROBE_AT = T0 + timedelta(hours=1)
"""When the event under test happens: later than every event of the starting history."""


def t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --- Event factories (fixed datetimes, never the clock) ------------------------------------


def submitted(at: datetime = T0, **kw: Any) -> Submitted:
    fields: dict[str, Any] = {"type": "echo", "payload": {"n": 1}, **kw}
    return Submitted(job_id=JOB, queue=QUEUE, at=at, **fields)


def scheduled(at: datetime, run_at: datetime | None = None) -> Scheduled:
    return Scheduled(
        job_id=JOB, queue=QUEUE, at=at, type="echo", run_at=run_at or at + timedelta(days=1)
    )


def released(at: datetime, attempt: int = 0) -> Released:
    return Released(job_id=JOB, queue=QUEUE, at=at, attempt=attempt)


def started(at: datetime, attempt: int = 1, worker: str = "w1") -> Started:
    return Started(job_id=JOB, queue=QUEUE, at=at, attempt=attempt, worker=worker)


def progress(at: datetime, attempt: int = 1, fraction: float = 0.5) -> Progress:
    return Progress(job_id=JOB, queue=QUEUE, at=at, attempt=attempt, fraction=fraction)


def succeeded(at: datetime, attempt: int = 1, result: Any = "ok") -> Succeeded:
    return Succeeded(
        job_id=JOB, queue=QUEUE, at=at, attempt=attempt, result=result, duration_ms=12.0
    )


def failed(
    at: datetime, attempt: int = 1, retry_at: datetime | None = None, error: str = "boom"
) -> Failed:
    return Failed(
        job_id=JOB,
        queue=QUEUE,
        at=at,
        attempt=attempt,
        error=error,
        error_type="RuntimeError",
        retry_at=retry_at,
    )


def dead_lettered(at: datetime, reason: str = "max deliveries reached") -> DeadLettered:
    return DeadLettered(job_id=JOB, queue=QUEUE, at=at, reason=reason)


def cancel_requested(at: datetime) -> CancelRequested:
    return CancelRequested(job_id=JOB, queue=QUEUE, at=at, actor="ops")


def canceled(at: datetime) -> Canceled:
    return Canceled(job_id=JOB, queue=QUEUE, at=at, reason="no longer needed")


def redriven(at: datetime, attempt: int = 0) -> Redriven:
    return Redriven(job_id=JOB, queue=QUEUE, at=at, attempt=attempt, actor="ops")


def purged(at: datetime) -> Purged:
    return Purged(job_id=JOB, queue=QUEUE, at=at, actor="ops")


# --- Starting states: the history that reaches each one ------------------------------------

STARTING_HISTORIES: dict[str, list[BaseEvent]] = {
    "none": [],
    "pending-queued": [submitted()],
    "pending-scheduled": [scheduled(T0)],
    "pending-retrying": [submitted(), started(t(1)), failed(t(2), retry_at=t(30))],
    "running": [submitted(), started(t(1))],
    "completed": [submitted(), started(t(1)), succeeded(t(2))],
    "failed": [submitted(), started(t(1)), failed(t(2))],
    "failed+dead_lettered": [submitted(), started(t(1)), failed(t(2)), dead_lettered(t(3))],
    "canceled": [submitted(), canceled(t(1))],
}

EXPECTED_START: dict[str, tuple[JobStatus, PendingReason | None] | None] = {
    "none": None,
    "pending-queued": (JobStatus.PENDING, PendingReason.QUEUED),
    "pending-scheduled": (JobStatus.PENDING, PendingReason.SCHEDULED),
    "pending-retrying": (JobStatus.PENDING, PendingReason.RETRYING),
    "running": (JobStatus.RUNNING, None),
    "completed": (JobStatus.COMPLETED, None),
    "failed": (JobStatus.FAILED, None),
    "failed+dead_lettered": (JobStatus.FAILED, None),
    "canceled": (JobStatus.CANCELED, None),
}


def _start(name: str) -> JobState | None:
    return fold(STARTING_HISTORIES[name])


def _current_attempt(state: JobState | None) -> int:
    return max(state.attempts if state else 0, 1)


# The event under test, built for the starting state: `started` is the *next* attempt,
# progress/succeeded/failed belong to the *current* attempt (so none of them is stale).
EventFactory = Callable[[JobState | None], BaseEvent]
PROBES: dict[str, EventFactory] = {
    "submitted": lambda s: submitted(PROBE_AT),
    "scheduled": lambda s: scheduled(PROBE_AT),
    "released": lambda s: released(PROBE_AT, attempt=s.attempts if s else 0),
    "started": lambda s: started(PROBE_AT, attempt=(s.attempts if s else 0) + 1, worker="w9"),
    "progress": lambda s: progress(PROBE_AT, attempt=_current_attempt(s)),
    "succeeded": lambda s: succeeded(PROBE_AT, attempt=_current_attempt(s)),
    "failed_with_retry_at": lambda s: failed(
        PROBE_AT, attempt=_current_attempt(s), retry_at=PROBE_AT + timedelta(minutes=5)
    ),
    "failed_without_retry_at": lambda s: failed(PROBE_AT, attempt=_current_attempt(s)),
    "dead_lettered": lambda s: dead_lettered(PROBE_AT),
    "cancel_requested": lambda s: cancel_requested(PROBE_AT),
    "canceled": lambda s: canceled(PROBE_AT),
    "redriven": lambda s: redriven(PROBE_AT, attempt=s.attempts if s else 0),
    "purged": lambda s: purged(PROBE_AT),
}

# --- The transition table ------------------------------------------------------------------
# Each cell: the (status, pending_reason) after the event, or REJECTED.

REJECTED = None
Outcome = tuple[JobStatus, PendingReason | None] | None

PENDING_QUEUED = (JobStatus.PENDING, PendingReason.QUEUED)
PENDING_SCHEDULED = (JobStatus.PENDING, PendingReason.SCHEDULED)
PENDING_RETRYING = (JobStatus.PENDING, PendingReason.RETRYING)
RUNNING = (JobStatus.RUNNING, None)
COMPLETED = (JobStatus.COMPLETED, None)
FAILED = (JobStatus.FAILED, None)
CANCELED = (JobStatus.CANCELED, None)

ALL_REJECTED: dict[str, Outcome] = dict.fromkeys(PROBES, REJECTED)


def _pending_row(sub_state: tuple[JobStatus, PendingReason]) -> dict[str, Outcome]:
    return {
        **ALL_REJECTED,
        # only a waiting job is released; a queued one already is runnable
        "released": REJECTED if sub_state == PENDING_QUEUED else PENDING_QUEUED,
        "started": RUNNING,
        "dead_lettered": FAILED,
        "cancel_requested": sub_state,  # asking to cancel does not move the job
        "canceled": CANCELED,
    }


TABLE: dict[str, dict[str, Outcome]] = {
    "none": {
        **ALL_REJECTED,
        "submitted": PENDING_QUEUED,
        "scheduled": PENDING_SCHEDULED,
        "dead_lettered": FAILED,
    },
    "pending-queued": _pending_row(PENDING_QUEUED),
    "pending-scheduled": _pending_row(PENDING_SCHEDULED),
    "pending-retrying": _pending_row(PENDING_RETRYING),
    "running": {
        **ALL_REJECTED,
        "started": RUNNING,  # redelivery after a lost lease
        "progress": RUNNING,
        "succeeded": COMPLETED,
        "failed_with_retry_at": PENDING_RETRYING,
        "failed_without_retry_at": FAILED,
        "dead_lettered": FAILED,
        "cancel_requested": RUNNING,
        "canceled": CANCELED,
    },
    "completed": ALL_REJECTED,
    "failed": {**ALL_REJECTED, "dead_lettered": FAILED},
    "failed+dead_lettered": {
        **ALL_REJECTED,
        "redriven": PENDING_QUEUED,
        "purged": FAILED,
    },
    "canceled": ALL_REJECTED,
}


def test_table_covers_every_state_and_every_event_kind() -> None:
    assert set(TABLE) == set(STARTING_HISTORIES) == set(EXPECTED_START)
    for row in TABLE.values():
        assert set(row) == set(PROBES)
    # every kind of event is probed (failed twice: with and without retry_at)
    kinds = {PROBES[name](_start("running")).event for name in PROBES}
    assert kinds == {
        "submitted",
        "scheduled",
        "released",
        "started",
        "progress",
        "succeeded",
        "failed",
        "dead_lettered",
        "cancel_requested",
        "canceled",
        "redriven",
        "purged",
    }


@pytest.mark.parametrize("name", list(STARTING_HISTORIES))
def test_starting_state_is_what_its_name_says(name: str) -> None:
    state = _start(name)

    expected = EXPECTED_START[name]
    if expected is None:
        assert state is None
    else:
        assert state is not None
        assert (state.status, state.pending_reason) == expected
        assert state.dead_lettered is (name == "failed+dead_lettered")


CASES = [
    pytest.param(start, probe, outcome, id=f"{start}--{probe}")
    for start, row in TABLE.items()
    for probe, outcome in row.items()
]


@pytest.mark.parametrize(("start", "probe", "outcome"), CASES)
def test_transition(start: str, probe: str, outcome: Outcome) -> None:
    state = _start(start)
    event = PROBES[probe](state)

    result = apply(state, event)

    assert isinstance(result, Transition)
    if outcome is REJECTED:
        assert result.applied is False
        assert result.state is state  # untouched: the very same object
        assert isinstance(result.rejected_because, str)
        assert result.rejected_because.strip()
    else:
        assert result.applied is True
        assert result.rejected_because is None
        assert result.state is not None
        assert (result.state.status, result.state.pending_reason) == outcome
        assert result.state.updated_at == PROBE_AT
        assert result.state.events_applied == (state.events_applied + 1 if state else 1)
        assert result.state.job_id == JOB
        assert result.state.queue == QUEUE
        if state is not None:
            assert result.state.created_at == state.created_at
            assert result.state.type == state.type


# --- Specific transitions ------------------------------------------------------------------


def test_submitted_creates_a_queued_job() -> None:
    event = submitted(T0, actor="alice")

    result = apply(None, event)

    assert result.applied
    state = result.state
    assert state is not None
    assert state.type == "echo"
    assert state.payload == {"n": 1}
    assert state.submitted_by == "alice"
    assert state.created_at == state.updated_at == T0
    assert state.attempts == 0
    assert state.events_applied == 1


def test_stale_attempt_progress_is_rejected() -> None:
    running2 = fold([submitted(), started(t(1), attempt=1), started(t(2), attempt=2)])
    assert running2 is not None and running2.attempts == 2

    result = apply(running2, progress(t(3), attempt=1, fraction=0.9))

    assert not result.applied
    assert result.state is running2
    assert result.rejected_because and "stale" in result.rejected_because


def test_stale_attempt_failed_is_rejected() -> None:
    running2 = fold([submitted(), started(t(1), attempt=1), started(t(2), attempt=2)])

    result = apply(running2, failed(t(3), attempt=1, error="lost the lease"))

    assert not result.applied
    assert result.state is running2
    assert result.rejected_because and "stale" in result.rejected_because


def test_stale_attempt_failed_with_retry_is_rejected_too() -> None:
    running2 = fold([submitted(), started(t(1), attempt=1), started(t(2), attempt=2)])

    result = apply(running2, failed(t(3), attempt=1, retry_at=t(10)))

    assert not result.applied
    assert result.state is running2


def test_stale_attempt_succeeded_completes_the_job() -> None:
    running2 = fold([submitted(), started(t(1), attempt=1), started(t(2), attempt=2)])

    result = apply(running2, succeeded(t(3), attempt=1, result={"sum": 3}))

    assert result.applied
    assert result.state is not None
    assert result.state.status is JobStatus.COMPLETED
    assert result.state.result == {"sum": 3}
    assert result.state.finished_at == t(3)
    assert result.state.progress == 1.0
    # and the current attempt's late success is then rejected: the job is already completed
    late = apply(result.state, succeeded(t(4), attempt=2))
    assert not late.applied
    assert late.state is result.state


@pytest.mark.parametrize("attempt", [1, 2], ids=["same-attempt", "older-attempt"])
def test_started_with_attempt_not_above_current_is_rejected(attempt: int) -> None:
    running2 = fold([submitted(), started(t(1), attempt=1), started(t(2), attempt=2)])

    result = apply(running2, started(t(3), attempt=attempt, worker="w2"))

    assert not result.applied
    assert result.state is running2
    assert result.rejected_because and "already started" in result.rejected_because


def test_started_with_old_attempt_after_retry_is_rejected() -> None:
    retrying = fold([submitted(), started(t(1)), failed(t(2), retry_at=t(5))])

    result = apply(retrying, started(t(6), attempt=1))

    assert not result.applied
    assert result.state is retrying


def test_redelivery_while_running_is_legal() -> None:
    running1 = fold([submitted(), started(t(1), attempt=1, worker="w1"), progress(t(2))])
    assert running1 is not None and running1.progress == 0.5

    result = apply(running1, started(t(3), attempt=2, worker="w2"))

    assert result.applied
    state = result.state
    assert state is not None
    assert state.status is JobStatus.RUNNING
    assert state.attempts == 2
    assert state.worker == "w2"
    assert state.started_at == t(3)
    assert state.progress is None  # the new attempt has reported nothing yet


def test_progress_of_current_attempt_updates_progress() -> None:
    state = fold([submitted(), started(t(1)), progress(t(2), fraction=0.25)])

    assert state is not None
    assert state.progress == 0.25
    assert state.updated_at == t(2)


def test_dead_lettered_first_event_creates_a_failed_job_of_unknown_type() -> None:
    event = dead_lettered(T0, reason="body is not JSON")

    result = apply(None, event)

    assert result.applied
    state = result.state
    assert state is not None
    assert state.type == UNKNOWN_TYPE == "unknown"
    assert state.status is JobStatus.FAILED
    assert state.pending_reason is None
    assert state.dead_lettered is True
    assert state.last_error == "body is not JSON"
    assert state.payload == {}
    assert state.created_at == state.updated_at == state.finished_at == T0
    assert state.events_applied == 1


def test_dead_lettering_a_failed_job_keeps_its_error() -> None:
    state = fold(
        [
            submitted(),
            started(t(1)),
            failed(t(2), error="ZeroDivisionError"),
            dead_lettered(t(3), reason="moved to DLQ"),
        ]
    )

    assert state is not None
    assert state.dead_lettered is True
    assert state.last_error == "ZeroDivisionError"
    assert state.finished_at == t(2)


def test_dead_lettering_a_running_job_records_the_reason() -> None:
    state = fold([submitted(), started(t(1)), dead_lettered(t(2), reason="max deliveries")])

    assert state is not None
    assert state.status is JobStatus.FAILED
    assert state.dead_lettered is True
    assert state.last_error == "max deliveries"
    assert state.finished_at == t(2)


def test_failed_with_retry_at_waits_for_it() -> None:
    state = fold([submitted(), started(t(1)), failed(t(2), retry_at=t(10), error="flaky")])

    assert state is not None
    assert state.pending_reason is PendingReason.RETRYING
    assert state.retry_at == t(10)
    assert state.last_error == "flaky"
    assert state.finished_at is None


def test_released_clears_the_wait() -> None:
    state = fold(
        [submitted(), started(t(1)), failed(t(2), retry_at=t(10)), released(t(10), attempt=1)]
    )

    assert state is not None
    assert state.pending_reason is PendingReason.QUEUED
    assert state.retry_at is None
    assert state.run_at is None


def test_scheduled_creates_a_waiting_job_with_its_run_at() -> None:
    state = fold([scheduled(T0, run_at=t(60))])

    assert state is not None
    assert (state.status, state.pending_reason) == PENDING_SCHEDULED
    assert state.run_at == t(60)
    assert state.type == "echo"


def test_release_of_an_older_attempt_is_rejected() -> None:
    retrying = fold([submitted(), started(t(1)), failed(t(2), retry_at=t(30))])

    stale = apply(retrying, released(t(3), attempt=0))

    assert not stale.applied
    assert stale.rejected_because and "attempt 0" in stale.rejected_because


def test_purged_takes_a_job_out_of_the_dead_letters_and_keeps_it_failed() -> None:
    state = fold([submitted(), started(t(1)), failed(t(2)), dead_lettered(t(3)), purged(t(4))])

    assert state is not None
    assert state.status is JobStatus.FAILED
    assert state.dead_lettered is False


def test_cancel_requested_only_flags_the_job() -> None:
    state = fold([submitted(), started(t(1)), cancel_requested(t(2))])

    assert state is not None
    assert state.status is JobStatus.RUNNING
    assert state.cancel_requested is True


def test_redriven_sends_a_dead_lettered_job_back_and_the_next_attempt_runs() -> None:
    events = [
        submitted(),
        started(t(1)),
        failed(t(2)),
        dead_lettered(t(3)),
        redriven(t(4), attempt=1),
        started(t(6), attempt=2),
    ]
    redriven_state = fold(events[:5])
    assert redriven_state is not None
    assert redriven_state.dead_lettered is False
    assert redriven_state.finished_at is None
    assert redriven_state.cancel_requested is False

    state = fold(events)

    assert state is not None
    assert state.status is JobStatus.RUNNING
    assert state.attempts == 2


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(started(t(9), attempt=1), id="started"),
        pytest.param(progress(t(9)), id="progress"),
        pytest.param(succeeded(t(9)), id="succeeded"),
        pytest.param(canceled(t(9)), id="canceled"),
        pytest.param(redriven(t(9)), id="redriven"),
    ],
)
def test_event_before_submission_is_rejected_with_a_reason(event: BaseEvent) -> None:
    result = apply(None, event)

    assert not result.applied
    assert result.state is None
    assert result.rejected_because and "never submitted" in result.rejected_because


def test_second_submitted_is_rejected() -> None:
    state = fold([submitted()])

    result = apply(state, submitted(t(1), type="other"))

    assert not result.applied
    assert result.state is state
    assert result.rejected_because == "the job was already submitted"


def test_rejection_reason_names_the_event_and_the_status() -> None:
    state = fold([submitted(), canceled(t(1))])

    result = apply(state, succeeded(t(2)))

    assert result.rejected_because == "succeeded is not legal when the job is canceled"


# --- The fold ------------------------------------------------------------------------------


def test_fold_of_nothing_is_none() -> None:
    assert fold([]) is None


def test_fold_of_the_happy_path() -> None:
    events = [
        submitted(T0, actor="api"),
        started(t(1), attempt=1, worker="w1"),
        progress(t(2), fraction=0.5),
        progress(t(3), fraction=0.75),
        succeeded(t(4), result={"echo": 1}),
    ]

    state = fold(events)

    assert state == JobState(
        job_id=JOB,
        queue=QUEUE,
        type="echo",
        payload={"n": 1},
        status=JobStatus.COMPLETED,
        pending_reason=None,
        created_at=T0,
        updated_at=t(4),
        attempts=1,
        started_at=t(1),
        finished_at=t(4),
        worker="w1",
        progress=1.0,
        result={"echo": 1},
        submitted_by="api",
        events_applied=5,
    )


def test_updated_at_follows_the_last_applied_event_and_only_applied_events_count() -> None:
    events = [
        submitted(T0),
        started(t(1)),
        submitted(t(2)),  # rejected: already submitted
        progress(t(3), attempt=7),  # rejected: stale attempt
        succeeded(t(4)),
        canceled(t(5)),  # rejected: already completed
        redriven(t(6)),  # rejected: not failed
    ]

    state = fold(events)

    assert state is not None
    assert state.status is JobStatus.COMPLETED
    assert state.updated_at == t(4)
    assert state.events_applied == 3


def test_events_before_submission_are_skipped_by_the_fold() -> None:
    state = fold([started(T0), submitted(t(1)), started(t(2))])

    assert state is not None
    assert state.created_at == t(1)
    assert state.status is JobStatus.RUNNING
    assert state.events_applied == 2


def test_fold_is_deterministic() -> None:
    events = [
        submitted(),
        scheduled(t(1)),
        released(t(2)),
        started(t(3)),
        failed(t(4), retry_at=t(5)),
        released(t(5), attempt=1),
        started(t(6), attempt=2),
        started(t(7), attempt=3),
        progress(t(8), attempt=3),
        succeeded(t(9), attempt=2),
    ]

    first, second = fold(events), fold(list(events))

    assert first is not None
    assert first == second
    assert first is not second
    assert first.status is JobStatus.COMPLETED
    assert first.attempts == 3


def test_fold_equals_applying_one_by_one() -> None:
    events = [submitted(), started(t(1)), failed(t(2), retry_at=t(3)), canceled(t(4))]
    state: JobState | None = None
    applied = []
    for event in events:
        result = apply(state, event)
        applied.append(result.applied)
        state = result.state

    assert fold(events) == state
    assert applied == [True, True, True, True]


def test_states_differ_when_an_event_differs() -> None:
    a = fold([submitted(), started(t(1))])
    b = fold([submitted(), started(t(1), worker="w2")])

    assert a != b
