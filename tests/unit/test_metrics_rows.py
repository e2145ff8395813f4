"""The per-minute metrics of a job created for later count it as submitted, and its wait
runs from its release, not from its creation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ferrisqueue.domain.events import BaseEvent, Released, Scheduled, Started
from ferrisqueue.domain.fold import JobState, apply
from projections.metrics import Applied, minute_rows

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def applied(events: list[BaseEvent]) -> list[Applied]:
    out: list[Applied] = []
    state: JobState | None = None
    for event in events:
        after = apply(state, event).state
        assert after is not None
        out.append((state, event, after))
        state = after
    return out


def test_a_scheduled_job_counts_as_submitted_and_waits_from_its_release() -> None:
    common = {"job_id": "j1", "queue": "q"}
    events: list[BaseEvent] = [
        Scheduled(**common, at=T0, type="echo", run_at=T0 + timedelta(seconds=30)),
        Released(**common, at=T0 + timedelta(seconds=30)),
        Started(**common, at=T0 + timedelta(seconds=30, milliseconds=4), attempt=1, worker="w"),
    ]

    [(key, row)] = minute_rows(applied(events)).items()

    assert key == (T0, "q", "echo")
    assert (row["submitted"], row["started"]) == (1, 1)
    assert sum(row["wait_hist"].values()) == 1
    [bucket] = row["wait_hist"]
    assert float(bucket) < 100  # milliseconds since the release, not 30 s since creation
