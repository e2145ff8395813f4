"""What the Queues, Scheduled and Cron pages make of the gateway's answers (pure functions
of streamlit_app/views/, no Streamlit run)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamlit_app.views.cron import schedule_table
from streamlit_app.views.queues import depth_frame, latency_frame, throughput_frame
from streamlit_app.views.scheduled import waiting_table

pytestmark = pytest.mark.timeout(30)

STATS = {
    "since": "2026-01-01T12:00:00+00:00",
    "until": "2026-01-01T12:05:00+00:00",
    "depth": [
        # Before the window: the depth it starts with.
        {"minute": "2026-01-01T11:50:00+00:00", "state": "pending:queued", "depth": 7},
        {"minute": "2026-01-01T12:02:00+00:00", "state": "pending:queued", "depth": 3},
        {"minute": "2026-01-01T12:03:00+00:00", "state": "running", "depth": 2},
    ],
    "minutes": [
        {
            "minute": "2026-01-01T12:01:00+00:00",
            "submitted": 4,
            "succeeded": 1,
            "failed": 2,
            "wait_ms_p50": 1.5,
            "wait_ms_p95": None,
            "wait_ms_p99": 9.0,
        }
    ],
}


def test_depth_is_carried_forward_from_each_point_to_the_next() -> None:
    frame = depth_frame(STATS)
    assert frame["queued"].tolist() == [7, 7, 3, 3, 3, 3]
    assert frame["running"].tolist() == [0, 0, 0, 2, 2, 2]
    assert frame["delayed"].tolist() == [0] * 6


def test_throughput_and_latency_fill_the_window_by_minute() -> None:
    assert throughput_frame(STATS)["failed"].tolist() == [0, 2, 0, 0, 0, 0]
    wait = latency_frame(STATS, "wait")
    assert wait.iloc[1].tolist()[0::2] == [1.5, 9.0]
    assert wait["p95"].isna().all() and wait["p50"].isna().sum() == 5


def test_waiting_table_says_when_each_job_is_due() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    job = {
        "job_id": "j1",
        "queue": "default",
        "type": "echo",
        "attempts": 1,
        "created_at": "2026-01-01T11:00:00+00:00",
        "run_at": "2026-01-01T12:30:00+00:00",
        "retry_at": "2026-01-01T11:59:00+00:00",
        "last_error": "boom",
    }
    delayed = waiting_table([job], "scheduled", now)
    assert delayed.iloc[0][["due (UTC)", "due in"]].tolist() == ["2026-01-01 12:30:00", "in 30 min"]
    assert "last error" not in delayed.columns
    retry = waiting_table([job], "retrying", now)
    assert retry.iloc[0][["due in", "last error"]].tolist() == ["overdue by 60 s", "boom"]


def test_schedule_table_shows_next_runs_and_the_newest_jobs_outcome() -> None:
    schedules = [
        {
            "name": "nightly",
            "schedule": "0 30 2 * * *",
            "timezone": "Europe/Berlin",
            "job": {"type": "report"},
            "paused": False,
            "next_fires": ["2026-01-02T01:30:00+00:00", "2026-01-03T01:30:00+00:00"],
        },
        {"name": "idle", "schedule": "@daily", "job": {"type": "echo"}, "paused": True},
    ]
    schedules[1]["next_fires"] = []
    last = {"job_id": "j9", "status": "pending", "pending_reason": "retrying"}
    last["created_at"] = "2026-01-01T01:30:00+00:00"
    table = schedule_table(schedules, {"nightly": [last]})
    assert table.iloc[0].tolist() == [
        "nightly",
        "0 30 2 * * * (Europe/Berlin)",
        "report",
        "active",
        "2026-01-02 01:30:00, 2026-01-03 01:30:00",
        "pending (retrying)",
        "2026-01-01 01:30:00",
        "j9",
    ]
    assert table.iloc[1][["state", "next runs (UTC)", "last outcome"]].tolist() == [
        "paused",
        "—",
        "no job yet",
    ]
