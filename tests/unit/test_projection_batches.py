"""The jobs projection applies each event once, whatever batches the log arrives in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from ferrisqueue.domain.events import BaseEvent, Started, Submitted, Succeeded, encode_event
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.store import queries
from ferrisqueue.store.db import init_schema, make_engine
from ferrisqueue.store.models import JobEventRow, JobRow, MetricsMinuteRow
from projections import jobs

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def log_of(job_count: int) -> list[StoredEvent]:
    events: list[BaseEvent] = []
    for n in range(job_count):
        job = {"job_id": f"job-{n:03d}", "queue": "default"}
        events += [
            Submitted(**job, at=T0 + timedelta(seconds=n), type="echo", payload={"n": n}),
            Started(**job, at=T0 + timedelta(seconds=n, milliseconds=1), attempt=1, worker="w"),
            Succeeded(
                **job,
                at=T0 + timedelta(seconds=n, milliseconds=2),
                attempt=1,
                result=n,
                duration_ms=1.0,
            ),
        ]
    stored = [
        StoredEvent.decode(seq, e.subject, encode_event(e), e.at) for seq, e in enumerate(events, 1)
    ]
    # One message nobody can decode, parked in the timeline rather than stopping the fold.
    stored.append(StoredEvent.decode(len(stored) + 1, "fq.job.default.job-000.started", b"{", T0))
    return stored


@contextmanager
def sqlite_store(path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{path}")
    init_schema(engine)
    yield engine
    engine.dispose()


def contents(engine: Engine) -> tuple[list[dict[str, Any]], ...]:
    """Every table the jobs projection writes, plus its checkpoint."""
    with Session(engine) as session:
        tables = [
            [r.model_dump() for r in session.exec(select(model).order_by(*order))]
            for model, order in (
                (JobRow, [col(JobRow.job_id)]),
                (JobEventRow, [col(JobEventRow.seq)]),
                (MetricsMinuteRow, [col(MetricsMinuteRow.minute), col(MetricsMinuteRow.type)]),
            )
        ]
        return (*tables, [{"position": queries.checkpoint(session, jobs.NAME)}])


def test_overlapping_and_repeated_batches_apply_each_event_once(
    store_engine: Engine, tmp_path: Path
) -> None:
    log = log_of(10)
    with Session(store_engine) as session:
        jobs.apply_batch(session, log)

    # Redelivery after a crash: batches overlap, and a whole batch arrives twice.
    with sqlite_store(tmp_path / "replayed.db") as replayed:
        for batch in (log[:7], log[3:12], log[3:12], log[10:], log):
            with Session(replayed) as session:
                jobs.apply_batch(session, batch)
        assert contents(replayed) == contents(store_engine)
    rows, timeline, metrics, checkpoint = contents(store_engine)
    assert checkpoint[0]["position"] == len(log) == 31
    assert sum(m["succeeded"] for m in metrics) == 10
    assert len(rows) == 10 and all(r["status"] == "completed" for r in rows)
    assert len(timeline) == 31
    parked = timeline[-1]
    assert parked["applied"] is False
    assert parked["rejected_because"].startswith("undecodable: body is not JSON")
    assert parked["raw"] == "{"


def test_a_batch_entirely_below_the_checkpoint_changes_nothing(store_engine: Engine) -> None:
    log = log_of(3)
    engine = store_engine
    with Session(engine) as session:
        jobs.apply_batch(session, log)
    before = contents(engine)

    with Session(engine) as session:
        position = jobs.apply_batch(session, log[:4])

    assert position == len(log)
    assert contents(engine) == before


def test_rejected_event_is_in_the_timeline_but_not_in_the_state(store_engine: Engine) -> None:
    job = {"job_id": "job-x", "queue": "default"}
    events: list[BaseEvent] = [
        Submitted(**job, at=T0, type="echo"),
        Succeeded(**job, at=T0, attempt=1, result=None, duration_ms=0.0),  # never started
    ]
    engine = store_engine
    with Session(engine) as session:
        jobs.apply_batch(
            session,
            [
                StoredEvent.decode(seq, e.subject, encode_event(e), T0)
                for seq, e in enumerate(events, 1)
            ],
        )

    rows, timeline, _, _ = contents(engine)
    assert rows[0]["status"] == "pending"
    assert rows[0]["last_seq"] == 1
    assert [t["applied"] for t in timeline] == [True, False]
    assert timeline[1]["rejected_because"] == "succeeded is not legal when the job is pending"


def test_one_event_per_batch_gives_the_same_metrics_as_one_batch(
    store_engine: Engine, tmp_path: Path
) -> None:
    log = log_of(12)
    with Session(store_engine) as session:
        jobs.apply_batch(session, log)

    with sqlite_store(tmp_path / "single.db") as single:
        for stored in log:
            with Session(single) as session:
                jobs.apply_batch(session, [stored])
        assert contents(single)[2] == contents(store_engine)[2]
    metrics = contents(store_engine)[2]
    assert sum(m["submitted"] for m in metrics) == 12
    assert sum(sum(m["wait_hist"].values()) for m in metrics) == 12
    assert sum(sum(m["run_hist"].values()) for m in metrics) == 12
