"""The projector's bulk writes (``ferrisqueue/store/bulk.py``) store exactly what SQLAlchemy
stores for the same rows, upsert with the kept columns left alone, and roll back with the
session, on SQLite and PostgreSQL (``store_engine``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select
from sqlmodel import Session

from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.states import JobStatus, PendingReason
from ferrisqueue.store.bulk import BulkWriter
from ferrisqueue.store.db import init_schema
from ferrisqueue.store.models import JOB_COLUMNS, JobRow, job_row

pytestmark = pytest.mark.timeout(30)

_JOBS = JobRow.__table__  # type: ignore[attr-defined]
AT = datetime(2026, 3, 1, 14, 0, 0, 500, tzinfo=timezone(timedelta(hours=2)))


def state(job_id: str, **changes: Any) -> JobState:
    fields: dict[str, Any] = {
        "job_id": job_id,
        "queue": "default",
        "type": "email",
        "payload": {"to": "a@b.c", "text": "déjà vu ✓", "nested": {"list": [1, 2.5, None]}},
        "status": JobStatus.PENDING,
        "pending_reason": PendingReason.QUEUED,
        "created_at": AT,
        "updated_at": AT,
    }
    return JobState(**{**fields, **changes})


def read(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as session:
        rows = session.execute(select(_JOBS).order_by(_JOBS.c.job_id)).all()
    return [dict(row._mapping) for row in rows]


def writer(engine: Engine) -> BulkWriter:
    return BulkWriter(_JOBS, JOB_COLUMNS, engine.dialect, key=("job_id",), keep=("payload",))


def test_rows_read_back_as_sqlalchemy_writes_them(store_engine: Engine) -> None:
    init_schema(store_engine)
    states = [
        state("a"),
        state("b", status=JobStatus.COMPLETED, pending_reason=None, finished_at=AT, result=[1]),
        state("c", result={"deep": {"x": None}}, cancel_requested=True, progress=0.5),
    ]
    with Session(store_engine) as session:
        writer(store_engine).execute(session, [job_row(s, n) for n, s in enumerate(states, 1)])
        session.commit()
    ours = read(store_engine)
    with Session(store_engine) as session:
        session.execute(delete(_JOBS))
        session.execute(
            insert(_JOBS),
            [dict(zip(JOB_COLUMNS, job_row(s, n), strict=True)) for n, s in enumerate(states, 1)],
        )
        session.commit()

    assert ours == read(store_engine)
    assert ours[0]["created_at"] == AT and ours[0]["created_at"].tzinfo is not None
    assert ours[2]["result"] == {"deep": {"x": None}} and ours[2]["cancel_requested"] is True


def test_an_upsert_updates_all_but_the_kept_columns(store_engine: Engine) -> None:
    init_schema(store_engine)
    bulk = writer(store_engine)
    with Session(store_engine) as session:
        bulk.execute(session, [job_row(state("a"), 1), job_row(state("b"), 2)])
        session.commit()
    later = AT + timedelta(seconds=5)
    with Session(store_engine) as session:
        bulk.execute(
            session,
            [
                job_row(state("a", payload={}, status=JobStatus.RUNNING, updated_at=later), 3),
                job_row(state("c"), 4),
            ],
        )
        session.commit()

    rows = {row["job_id"]: row for row in read(store_engine)}
    assert sorted(rows) == ["a", "b", "c"]
    assert rows["a"]["status"] == "running" and rows["a"]["updated_at"] == later.astimezone(UTC)
    assert rows["a"]["last_seq"] == 3
    assert rows["a"]["payload"] == state("a").payload  # kept: the update sent an empty one


def test_rows_roll_back_with_the_session(store_engine: Engine) -> None:
    init_schema(store_engine)
    bulk = writer(store_engine)
    with Session(store_engine) as session:
        bulk.execute(session, [job_row(state("a"), 1)])
        session.rollback()
    with Session(store_engine) as session:  # the same pooled connection, used again
        bulk.execute(session, [job_row(state("b"), 2)])
        session.commit()

    assert [row["job_id"] for row in read(store_engine)] == ["b"]
