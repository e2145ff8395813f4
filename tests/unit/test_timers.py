"""The timer relay's pure parts: which event asks for which timer, the timer message, and
whether a job still waits for the timer an event asks for (so replays and stale failures
arm nothing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ferrisqueue.domain.commands import Rejection, decide_release, release_abandoned
from ferrisqueue.domain.events import (
    BaseEvent,
    Canceled,
    CancelRequested,
    Failed,
    Released,
    Scheduled,
    Started,
    Submitted,
    Succeeded,
    decode_event,
)
from ferrisqueue.domain.fold import JobState, fold
from ferrisqueue.domain.states import PendingReason
from scheduler.timers import FIRED_TTL, Timer, at_schedule, timer_for

JOB = "job-1"
QUEUE = "default"
T0 = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
RUN_AT = T0 + timedelta(seconds=1, milliseconds=250)
RETRY_AT = T0 + timedelta(minutes=5)


def scheduled(run_at: datetime = RUN_AT) -> Scheduled:
    return Scheduled(job_id=JOB, queue=QUEUE, at=T0, type="echo", run_at=run_at)


def started(attempt: int, minutes: float) -> Started:
    return Started(
        job_id=JOB, queue=QUEUE, at=T0 + timedelta(minutes=minutes), attempt=attempt, worker="w"
    )


def failed(attempt: int, retry_at: datetime | None = RETRY_AT) -> Failed:
    return Failed(
        job_id=JOB,
        queue=QUEUE,
        at=T0 + timedelta(minutes=attempt + 0.5),
        attempt=attempt,
        error="boom",
        error_type="error:builtins.RuntimeError",
        retry_at=retry_at,
    )


def released(attempt: int, minutes: float) -> Released:
    return Released(job_id=JOB, queue=QUEUE, at=T0 + timedelta(minutes=minutes), attempt=attempt)


# --- at_schedule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("due", "expected"),
    [
        (RUN_AT, "@at 2026-11-28T05:00:01.250Z"),
        (T0, "@at 2026-11-28T05:00:00.000Z"),
        # Rounded up, never down: a timer must not fire before its due time.
        (T0 + timedelta(microseconds=1), "@at 2026-11-28T05:00:00.001Z"),
        (T0 + timedelta(microseconds=999_001), "@at 2026-11-28T05:00:01.000Z"),
        (datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), "@at 2027-01-01T00:00:00.000Z"),
        # Any timezone in, UTC out.
        (
            datetime(2026, 11, 28, 7, 0, 1, 250_000, tzinfo=timezone(timedelta(hours=2))),
            "@at 2026-11-28T05:00:01.250Z",
        ),
    ],
)
def test_at_schedule_is_rfc3339_utc_with_milliseconds_rounded_up(
    due: datetime, expected: str
) -> None:
    assert at_schedule(due) == expected


# --- timer_for ----------------------------------------------------------------------------


def test_a_scheduled_job_gets_a_timer_at_run_at_after_no_attempt() -> None:
    assert timer_for(scheduled()) == Timer(QUEUE, JOB, RUN_AT, 0, PendingReason.SCHEDULED)


def test_a_failure_with_retry_at_gets_a_timer_after_its_attempt() -> None:
    assert timer_for(failed(2)) == Timer(QUEUE, JOB, RETRY_AT, 2, PendingReason.RETRYING)


@pytest.mark.parametrize(
    "event",
    [
        failed(3, retry_at=None),
        Submitted(job_id=JOB, queue=QUEUE, at=T0, type="echo"),
        Canceled(job_id=JOB, queue=QUEUE, at=T0),
        released(0, 1),
        started(1, 1),
    ],
    ids=lambda e: e.kind.value,
)
def test_other_events_ask_for_no_timer(event: BaseEvent) -> None:
    assert timer_for(event) is None


# --- the timer message ----------------------------------------------------------------------


def test_the_timer_message_names_its_due_subject_ttl_and_dedup_key() -> None:
    timer = Timer(QUEUE, JOB, RETRY_AT, 2, PendingReason.RETRYING)

    assert timer.subject == f"fq.timer.{QUEUE}.{JOB}"
    assert timer.headers() == {
        "Nats-Schedule": "@at 2026-11-28T05:05:00.000Z",
        "Nats-Schedule-Target": f"fq.due.{QUEUE}.{JOB}",
        "Nats-Schedule-TTL": FIRED_TTL,
        "Nats-Msg-Id": f"{JOB}:timer:2",
    }


def test_the_fired_body_on_the_transformed_subject_is_the_jobs_release() -> None:
    timer = Timer(QUEUE, JOB, RETRY_AT, 2, PendingReason.RETRYING)
    stored_at = RETRY_AT + timedelta(milliseconds=120)

    event = decode_event(f"fq.job.{QUEUE}.{JOB}.released", timer.body, stored_at=stored_at)

    assert event == Released(job_id=JOB, queue=QUEUE, at=stored_at, attempt=2, actor="scheduler")


# --- the release decision on the timer an event asks for ----------------------------------
# (every state against every wait: tests/unit/test_commands.py)


def waits_for(state: JobState | None, timer: Timer) -> bool:
    release = decide_release(state, waiting=timer.waiting, attempt=timer.attempt, due=timer.due)
    return not isinstance(release, Rejection)


def test_a_freshly_scheduled_job_waits_for_its_timer() -> None:
    state = fold([scheduled()])
    timer = timer_for(scheduled())
    assert timer is not None

    assert waits_for(state, timer)
    assert not release_abandoned(state)


def test_a_retrying_job_waits_for_the_timer_of_its_last_failure() -> None:
    state = fold([scheduled(), released(0, 1), started(1, 1), failed(1)])
    timer = timer_for(failed(1))
    assert timer is not None

    assert waits_for(state, timer)


@pytest.mark.parametrize(
    ("history", "trigger"),
    [
        # Already released (a replayed `scheduled`, or a redelivery after the timer fired).
        ([scheduled(), released(0, 1)], scheduled()),
        # Long finished: a consumer re-created from the start of the log arms nothing.
        (
            [
                scheduled(),
                released(0, 1),
                started(1, 1),
                Succeeded(
                    job_id=JOB, queue=QUEUE, at=T0 + timedelta(minutes=2), attempt=1, duration_ms=1
                ),
            ],
            scheduled(),
        ),
        # The failure of attempt 1 after attempt 2 began (a lost lease): stale.
        ([scheduled(), released(0, 1), started(1, 1), failed(1), started(2, 6)], failed(1)),
        # Canceled, or a cancel under way.
        ([scheduled(), Canceled(job_id=JOB, queue=QUEUE, at=T0)], scheduled()),
        ([scheduled(), CancelRequested(job_id=JOB, queue=QUEUE, at=T0)], scheduled()),
        # A second `scheduled` with another time for a job that already exists.
        ([scheduled()], scheduled(RUN_AT + timedelta(hours=1))),
    ],
    ids=["released", "finished", "stale-failure", "canceled", "cancel-requested", "other-time"],
)
def test_a_job_that_no_longer_waits_for_the_timer_gets_none(
    history: list[BaseEvent], trigger: BaseEvent
) -> None:
    timer = timer_for(trigger)
    assert timer is not None

    assert not waits_for(fold(history), timer)


def test_an_unknown_job_waits_for_nothing_and_any_timer_of_it_must_go() -> None:
    timer = timer_for(scheduled())
    assert timer is not None

    assert not waits_for(None, timer)
    assert release_abandoned(None)
