"""A worker's health, from its last heartbeat."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ferrisqueue.domain.workers import WorkerHealth, health
from ferrisqueue.settings import Settings

NOW = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("silent_for", "stopped", "expected"),
    [
        (timedelta(seconds=4), False, WorkerHealth.HEALTHY),
        (timedelta(seconds=15), False, WorkerHealth.HEALTHY),
        (timedelta(seconds=16), False, WorkerHealth.STALE),
        (timedelta(seconds=60), False, WorkerHealth.STALE),
        (timedelta(seconds=61), False, WorkerHealth.GONE),
        (timedelta(seconds=1), True, WorkerHealth.GONE),
    ],
    ids=["fresh", "three-intervals", "missed-three", "a-minute", "past-a-minute", "stopped"],
)
def test_health_follows_the_last_heartbeat(
    silent_for: timedelta, stopped: bool, expected: WorkerHealth
) -> None:
    assert health(NOW - silent_for, 5.0, stopped, NOW) is expected


def test_slow_heartbeats_stretch_the_gone_threshold() -> None:
    assert health(NOW - timedelta(seconds=100), 10.0, False, NOW) is WorkerHealth.STALE
    assert health(NOW - timedelta(seconds=121), 10.0, False, NOW) is WorkerHealth.GONE


def test_default_worker_id_is_a_subject_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "node-1.example.internal")

    worker_id = Settings(_env_file=None).worker_id  # type: ignore[call-arg]

    assert worker_id.startswith("node-1-example-internal-")
