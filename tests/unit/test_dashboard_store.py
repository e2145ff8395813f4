"""The read-store tables and queries behind the dashboard's Scheduled, Cron, Queues and
Errors pages: what the jobs projection writes (queue depth, failed attempts) and what the
queries read back, on SQLite and PostgreSQL, whatever batches the log arrives in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from ferrisqueue.domain.events import (
    BaseEvent,
    Failed,
    Released,
    Scheduled,
    Started,
    Submitted,
    Succeeded,
    cron_actor,
    encode_event,
)
from ferrisqueue.domain.states import PendingReason
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.store import insights
from ferrisqueue.store.models import JobErrorRow, QueueDepthMinuteRow, QueueDepthRow
from projections import jobs
from projections.errors import group_key
from tests.unit.test_projection_batches import sqlite_store

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def job(n: int, queue: str = "default") -> dict[str, Any]:
    return {"job_id": f"job-{n:03d}", "queue": queue}


def history() -> list[BaseEvent]:
    """Job 1 runs and succeeds, job 2 fails twice (a retry, then for good), job 3 is delayed
    to 13:00, job 4 is a cron job waiting in the queue, job 5 is delayed to 12:30."""
    boom = {"error": "the printer is on fire", "error_type": "OSError"}
    return [
        Submitted(**job(1), at=at(0), type="echo"),
        Submitted(**job(2), at=at(0.5), type="fail"),
        Started(**job(1), at=at(1), attempt=1, worker="w"),
        Started(**job(2), at=at(1.2), attempt=1, worker="w"),
        Failed(**job(2), at=at(1.5), attempt=1, retry_at=at(2), duration_ms=3.0, **boom),
        Scheduled(**job(3), at=at(1.6), type="echo", run_at=at(60)),
        Succeeded(**job(1), at=at(2), attempt=1, result=None, duration_ms=5.0),
        Released(**job(2), at=at(2.1), attempt=1),
        Started(**job(2), at=at(2.2), attempt=2, worker="w"),
        Failed(**job(2), at=at(2.5), attempt=2, duration_ms=4.0, **boom),
        Submitted(**job(4), at=at(3), type="echo", actor=cron_actor("nightly")),
        Scheduled(**job(5), at=at(3.5), type="echo", run_at=at(30)),
    ]


def stored(events: list[BaseEvent]) -> list[StoredEvent]:
    return [
        StoredEvent.decode(seq, e.subject, encode_event(e), e.at) for seq, e in enumerate(events, 1)
    ]


def contents(engine: Engine) -> tuple[list[dict[str, Any]], ...]:
    with Session(engine) as session:
        return tuple(
            [r.model_dump() for r in session.exec(select(model).order_by(*order))]
            for model, order in (
                (QueueDepthRow, [col(QueueDepthRow.state)]),
                (QueueDepthMinuteRow, [col(QueueDepthMinuteRow.state), QueueDepthMinuteRow.minute]),
                (JobErrorRow, [col(JobErrorRow.seq)]),
            )
        )


def test_depth_history_and_errors_are_the_same_in_one_batch_or_many(
    store_engine: Engine, tmp_path: Path
) -> None:
    log = stored(history())
    with Session(store_engine) as session:
        jobs.apply_batch(session, log)

    with sqlite_store(tmp_path / "batched.db") as batched:
        for batch in (log[:3], log[2:7], log[2:7], log[7:], log):
            with Session(batched) as session:
                jobs.apply_batch(session, batch)
        assert contents(batched) == contents(store_engine)

    with Session(store_engine) as session:
        assert insights.queue_depth(session) == {
            ("default", "pending:queued"): 1,  # job 4
            ("default", "pending:scheduled"): 2,  # jobs 3 and 5
            ("default", "pending:retrying"): 0,
            ("default", "running"): 0,
        }
        # 12:01: jobs 1 and 2 started; 12:02: job 1 done, job 2 released and running again.
        points = {
            (p.state, p.minute): p.depth
            for p in insights.depth_history(session, "default", at(0), at(10))
        }
        assert points[("running", at(1))] == 1  # job 2 failed within the minute
        assert points[("running", at(2))] == 0
        assert points[("pending:retrying", at(1))] == 1
        assert points[("pending:queued", at(3))] == 1
        # A window after every change starts from the last point before it.
        later = insights.depth_history(session, "default", at(20), at(30))
        assert {(p.state, p.depth) for p in later} == {
            ("pending:queued", 1),
            ("pending:scheduled", 2),
            ("pending:retrying", 0),
            ("running", 0),
        }


def test_error_groups_count_attempts_and_jobs_and_list_them(store_engine: Engine) -> None:
    with Session(store_engine) as session:
        jobs.apply_batch(session, stored(history()))
        [group] = insights.error_groups(session, at(0), at(10))
        assert group.key == group_key("OSError", "the printer is on fire")
        assert (group.error_type, group.message) == ("OSError", "the printer is on fire")
        assert (group.attempts, group.jobs, group.final) == (2, 1, 1)
        assert (group.first_at, group.last_at) == (at(1.5), at(2.5))
        assert insights.error_groups(session, at(3), at(10)) == []
        # Counted by minute over 12:00-12:10: attempts at 12:01:30 and 12:02:30.
        assert insights.error_trends(session, at(0), at(10), 10) == {
            group.key: [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
        }
        attempts = insights.error_attempts(session, group.key)
        assert [(row.job_id, row.final, status) for row, status in attempts] == [
            ("job-002", True, "failed"),
            ("job-002", False, "failed"),
        ]
        newest_seq = attempts[0][0].seq
        assert len(insights.error_attempts(session, group.key, before=newest_seq)) == 1


def test_waiting_jobs_are_paged_soonest_first_and_cron_jobs_found_by_schedule(
    store_engine: Engine,
) -> None:
    with Session(store_engine) as session:
        jobs.apply_batch(session, stored(history()))
        first = insights.waiting_jobs(session, PendingReason.SCHEDULED, limit=1)
        assert [(j.job_id, j.run_at) for j in first] == [("job-005", at(30))]
        rest = insights.waiting_jobs(
            session, PendingReason.SCHEDULED, after=(at(30), "job-005"), limit=1
        )
        assert [j.job_id for j in rest] == ["job-003"]
        assert insights.waiting_jobs(session, PendingReason.RETRYING) == []
        assert insights.waiting_counts(session) == {"scheduled": 2}
        assert [j.job_id for j in insights.schedule_jobs(session, "nightly")] == ["job-004"]
        assert insights.schedule_jobs(session, "other") == []
