"""Backoff, attempt budgets and per-queue policy: pure functions of their inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from ferrisqueue.domain.backoff import RetryPolicy
from ferrisqueue.domain.events import Submitted
from ferrisqueue.domain.policy import QueuePolicy, for_job, retry_at
from ferrisqueue.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (60, 10.0), (10_000, 10.0)]
)
def test_backoff_doubles_from_base_up_to_cap(attempt: int, expected: float) -> None:
    policy = RetryPolicy(base=2, cap=10, jitter=0)

    assert policy.delay(attempt, draw=0.7) == expected


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 75.0), (0.5, 100.0), (0.999999, 125.0)])
def test_jitter_spreads_the_delay_by_its_fraction(draw: float, expected: float) -> None:
    policy = RetryPolicy(base=100, cap=1000, jitter=0.25)

    assert policy.delay(1, draw) == pytest.approx(expected, abs=1e-3)


def test_cap_below_base_is_refused() -> None:
    with pytest.raises(ValidationError, match="cap must not be smaller than base"):
        RetryPolicy(base=10, cap=5)


def test_retry_at_until_the_budget_is_used() -> None:
    policy = QueuePolicy(max_attempts=3, retry=RetryPolicy(base=1, cap=60, jitter=0))

    times = [retry_at(policy, attempt=a, budget_start=0, now=NOW, draw=0.5) for a in (1, 2, 3)]

    assert times == [NOW + timedelta(seconds=1), NOW + timedelta(seconds=2), None]


def test_a_redrive_starts_a_fresh_budget() -> None:
    policy = QueuePolicy(max_attempts=2, retry=RetryPolicy(base=1, cap=60, jitter=0))

    # attempts 1-2 used before the redrive at attempt 2; attempt 3 is the first of the new budget
    assert retry_at(policy, attempt=3, budget_start=2, now=NOW, draw=0) == NOW + timedelta(
        seconds=1
    )
    assert retry_at(policy, attempt=4, budget_start=2, now=NOW, draw=0) is None


def test_a_job_refines_its_queues_policy() -> None:
    queue = QueuePolicy(ack_wait=40, max_attempts=5, timeout=60)
    job = Submitted(
        job_id="j", queue="q", at=NOW, type="echo", max_attempts=2, retry=RetryPolicy(base=9)
    )

    policy = for_job(queue, job)

    assert (policy.ack_wait, policy.max_attempts, policy.timeout) == (40, 2, 60)
    assert policy.retry.base == 9


def test_queue_overrides_come_from_fq_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FQ_QUEUES", '{"mail": {"ack_wait": 120, "retry": {"base": 5, "cap": 60}}}')
    settings = Settings(_env_file=None, max_attempts=4)  # type: ignore[call-arg]

    mail, default = settings.policy("mail"), settings.policy("default")

    assert (mail.ack_wait, mail.max_attempts, mail.retry.base, mail.retry.cap) == (120, 4, 5, 60)
    assert (default.ack_wait, default.retry.base) == (settings.ack_wait, settings.retry_base)


def test_a_queue_name_that_is_no_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FQ_QUEUES", '{"bad.name": {"ack_wait": 10}}')

    with pytest.raises(ValidationError, match="queue names"):
        Settings(_env_file=None)  # type: ignore[call-arg]
