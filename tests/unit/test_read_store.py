"""Read-store conformance: the same tests on SQLite and PostgreSQL (``store_engine``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.domain.events import BaseEvent, Failed, Started, Submitted, Succeeded, encode_event
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.store import queries
from ferrisqueue.store.db import SCHEMA_VERSION, init_schema
from ferrisqueue.store.models import SchemaInfo
from projections import jobs

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def project(engine: Engine, events: list[BaseEvent]) -> None:
    with Session(engine) as session:
        jobs.apply_batch(
            session,
            [
                StoredEvent.decode(seq, e.subject, encode_event(e), e.at)
                for seq, e in enumerate(events, 1)
            ],
        )


def finished_job(n: int, queue: str, outcome: str) -> list[BaseEvent]:
    job = {"job_id": f"job-{n:03d}", "queue": queue}
    at = T0 + timedelta(minutes=n)
    end: BaseEvent = (
        Succeeded(**job, at=at + timedelta(seconds=2), attempt=1, result={"n": n}, duration_ms=5.0)
        if outcome == "completed"
        else Failed(
            **job, at=at + timedelta(seconds=2), attempt=1, error=f"boom {n}", error_type="error:X"
        )
    )
    return [
        Submitted(**job, at=at, type="echo", payload={"n": n}),
        Started(**job, at=at + timedelta(seconds=1), attempt=1, worker="w1"),
        end,
    ]


@pytest.fixture
def populated(store_engine: Engine) -> Engine:
    events: list[BaseEvent] = []
    for n in range(10):
        events += finished_job(
            n, "mail" if n % 2 else "default", "failed" if n % 5 == 0 else "completed"
        )
    project(store_engine, events)
    return store_engine


def test_a_job_reads_back_as_the_fold_left_it(populated: Engine) -> None:
    with Session(populated) as session:
        state = queries.get_job(session, "job-003")

    assert state is not None
    assert state.status == "completed"
    assert state.result == {"n": 3}
    assert state.created_at == T0 + timedelta(minutes=3)
    assert state.created_at.tzinfo is not None
    assert state.events_applied == 3


def test_listing_filters_and_pages_newest_first(populated: Engine) -> None:
    with Session(populated) as session:
        first = queries.list_jobs(session, limit=4)
        second = queries.list_jobs(session, limit=4, before=first[-1].job_id)
        failed = queries.list_jobs(session, status="failed")
        mail = queries.list_jobs(session, queue="mail", limit=100)

    assert [s.job_id for s in first + second] == [f"job-{n:03d}" for n in range(9, 1, -1)]
    assert sorted(s.job_id for s in failed) == ["job-000", "job-005"]
    assert {s.queue for s in mail} == {"mail"} and len(mail) == 5


def test_status_counts_per_queue(populated: Engine) -> None:
    with Session(populated) as session:
        counts = queries.status_counts(session)

    assert counts == {
        ("default", "completed"): 4,
        ("default", "failed"): 1,
        ("mail", "completed"): 4,
        ("mail", "failed"): 1,
    }


def test_timeline_lists_every_event_in_log_order(populated: Engine) -> None:
    with Session(populated) as session:
        timeline = queries.job_timeline(session, "job-005")

    assert [row.event for row in timeline] == ["submitted", "started", "failed"]
    assert [row.seq for row in timeline] == sorted(row.seq for row in timeline)
    assert timeline[2].body is not None and json.loads(timeline[2].body)["error"] == "boom 5"


def test_init_schema_is_idempotent(store_engine: Engine) -> None:
    init_schema(store_engine)
    init_schema(store_engine)

    with Session(store_engine) as session:
        assert session.get(SchemaInfo, "version") == SchemaInfo(key="version", value=SCHEMA_VERSION)


def test_a_store_of_another_schema_version_is_refused(store_engine: Engine) -> None:
    with Session(store_engine) as session:
        row = session.get(SchemaInfo, "version")
        assert row is not None
        row.value = SCHEMA_VERSION + 1
        session.add(row)
        session.commit()

    with pytest.raises(ConfigurationError, match="fq projections rebuild"):
        init_schema(store_engine)
