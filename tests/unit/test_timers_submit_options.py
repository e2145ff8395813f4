"""``POST /jobs`` start-time options, as the request model reads them: ``run_at`` or ``delay``
(never both), a timezone required, and whether the job waits or runs at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from gateway.schemas import JobCreate

NOW = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)


def test_a_delay_makes_the_job_due_that_long_from_now() -> None:
    assert JobCreate(type="echo", delay=2.5).due(NOW) == NOW + timedelta(seconds=2.5)


def test_a_future_run_at_in_any_timezone_is_due_then_in_utc() -> None:
    run_at = datetime(2026, 11, 28, 7, 30, tzinfo=timezone(timedelta(hours=2)))

    due = JobCreate(type="echo", run_at=run_at).due(NOW)

    assert due == NOW + timedelta(minutes=30)
    assert due is not None and due.tzinfo is UTC


@pytest.mark.parametrize(
    "options",
    [{}, {"delay": 0}, {"run_at": NOW}, {"run_at": NOW - timedelta(days=1)}],
    ids=["none", "delay-0", "run_at-now", "run_at-past"],
)
def test_no_time_zero_delay_or_a_time_not_ahead_runs_at_once(options: dict[str, object]) -> None:
    assert JobCreate.model_validate({"type": "echo", **options}).due(NOW) is None


def test_run_at_and_delay_together_are_refused_with_a_reason() -> None:
    with pytest.raises(ValidationError, match="give run_at or delay, not both"):
        JobCreate.model_validate({"type": "echo", "delay": 1, "run_at": "2030-01-01T00:00:00Z"})


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"run_at": "2030-01-01T00:00:00"}, "timezone"),
        ({"delay": -1}, "greater than or equal to 0"),
        ({"max_attempts": 0}, "greater than or equal to 1"),
        ({"timeout": 0}, "greater than 0"),
        ({"retry": {"base": 10, "cap": 1}}, "cap must not be smaller than base"),
    ],
    ids=["naive-run_at", "negative-delay", "no-attempts", "zero-timeout", "cap-below-base"],
)
def test_invalid_options_are_refused(options: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        JobCreate.model_validate({"type": "echo", **options})
