"""The pure parts of the job page, the Operate page and the actions: attempts from a job's
audit trail, the "since" an operator types, relative times, and a refusal said plainly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streamlit_app.actions import refusal
from streamlit_app.client import GatewayRefused
from streamlit_app.display import parse_since, relative, when
from streamlit_app.views.job import attempts_table, payload_of

NOW = datetime(2026, 12, 4, 16, 0, 0, tzinfo=UTC)


def entry(seq: int, event: str, at: str, applied: bool = True, **body: Any) -> dict[str, Any]:
    return {"seq": seq, "event": event, "at": f"2026-12-04T{at}Z", "applied": applied, "body": body}


def test_attempts_pair_each_start_with_its_outcome_worker_duration_and_error() -> None:
    events = [
        entry(1, "submitted", "10:00:00", payload={"n": 1}),
        entry(2, "started", "10:00:01", attempt=1, worker="w1"),
        entry(3, "failed", "10:00:02", attempt=1, error="boom", error_type="ValueError",
              duration_ms=850.0, retry_at="2026-12-04T10:00:05Z"),
        entry(4, "released", "10:00:05"),
        entry(5, "started", "10:00:05", attempt=2, worker="w2"),
        entry(6, "started", "10:00:06", applied=False, attempt=2, worker="w3"),  # a duplicate
        entry(7, "started", "10:01:00", attempt=3, worker="w1"),  # attempt 2 was lost
        entry(8, "succeeded", "10:01:00.250", attempt=3, duration_ms=250.0),
    ]  # fmt: skip

    table = attempts_table(events)

    assert table[["attempt", "worker", "duration", "outcome"]].values.tolist() == [
        [1, "w1", "850 ms", "failed, retry at 10:00:05.000"],
        [2, "w2", "", "lost (no outcome recorded)"],
        [3, "w1", "250 ms", "succeeded"],
    ]
    assert table["error"].tolist() == ["ValueError: boom", "", ""]
    assert payload_of(events) == {"n": 1}


def test_a_cancel_ends_the_running_attempt_and_a_job_never_started_has_none() -> None:
    events = [
        entry(1, "submitted", "10:00:00"),
        entry(2, "started", "10:00:01", attempt=1, worker="w1"),
        entry(3, "cancel_requested", "10:00:02"),
        entry(4, "canceled", "10:00:03"),
    ]
    assert attempts_table(events)["outcome"].tolist() == ["canceled"]
    assert attempts_table(events[:1]).empty


@pytest.mark.parametrize(
    ("text", "since"),
    [
        ("", None),
        ("10:00", datetime(2026, 12, 4, 10, 0, tzinfo=UTC)),
        ("17:30", datetime(2026, 12, 3, 17, 30, tzinfo=UTC)),  # still ahead today: yesterday
        ("2026-12-01 08:15", datetime(2026, 12, 1, 8, 15, tzinfo=UTC)),
        ("2026-12-01T08:15:00+01:00", datetime(2026, 12, 1, 7, 15, tzinfo=UTC)),
    ],
)
def test_since_reads_a_time_of_day_or_a_date_and_time_in_utc(
    text: str, since: datetime | None
) -> None:
    assert parse_since(text, NOW) == since


@pytest.mark.parametrize("text", ["yesterday", "25:00", "10:00 pm"])
def test_a_since_that_is_not_a_time_says_which_forms_are_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="write HH:MM"):
        parse_since(text, NOW)


def test_times_are_relative_with_the_absolute_time_on_hover() -> None:
    assert relative("2026-12-04T15:57:00Z", NOW) == "3 min ago"
    assert relative("2026-12-04T16:00:30Z", NOW) == "in 30 s"
    assert when("2026-12-04T15:59:55Z", NOW) == (
        '<span title="2026-12-04 15:59:55 UTC">5.0 s ago</span>'
    )
    assert when(None, NOW) == "—"


def test_a_missing_scope_is_said_plainly_with_the_gateways_reason() -> None:
    forbidden = refusal(GatewayRefused(403, "this key lacks the scope queues:admin"))
    assert forbidden.startswith("Not allowed: your API key may not do this.")
    assert "queues:admin" in forbidden
    assert "log out and in again" in refusal(GatewayRefused(401, "revoked"))
    assert refusal(GatewayRefused(409, "job is completed")) == (
        "Refused by the gateway (409): job is completed"
    )
