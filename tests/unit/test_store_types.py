"""The read store's own column conversions (``ferrisqueue/store/types.py``) store what
SQLAlchemy's generic ones stored and read back the same values, on SQLite and PostgreSQL
(``store_engine``). JSON columns: tests/unit/test_bulk_writer.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import StatementError
from sqlmodel import Session

from ferrisqueue.store.db import init_schema
from ferrisqueue.store.models import JobEventRow
from ferrisqueue.store.types import UtcDateTime

pytestmark = pytest.mark.timeout(30)

_TIMELINE = JobEventRow.__table__  # type: ignore[attr-defined]

TIMES = [
    datetime(2026, 3, 1, 12, 0, tzinfo=UTC),  # no microseconds
    datetime(2026, 3, 1, 12, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 3, 1, 14, 0, 0, 500, tzinfo=timezone(timedelta(hours=2))),  # 12:00 UTC
    datetime(1, 1, 1, tzinfo=UTC),
]


@pytest.mark.parametrize("value", TIMES, ids=str)
def test_sqlite_text_is_the_text_sqlalchemy_writes(value: datetime) -> None:
    dialect = sqlite.dialect()
    ours = UtcDateTime().bind_processor(dialect)
    theirs = sqlite.DATETIME().bind_processor(dialect)
    assert theirs is not None

    assert ours(value) == theirs(value.astimezone(UTC))


def test_a_time_without_a_zone_is_refused(store_engine: Engine) -> None:
    init_schema(store_engine)
    naive = datetime(2026, 3, 1, 12, 0)
    with Session(store_engine) as session, pytest.raises(StatementError, match="time zone"):
        session.execute(insert(_TIMELINE), [_row(1, naive, {})])


def test_times_read_back_as_written_and_sort_in_time(store_engine: Engine) -> None:
    init_schema(store_engine)
    bodies = [{"n": n, "text": "déjà vu ✓", "nested": {"list": [1, 2.5, None]}} for n in range(5)]
    with Session(store_engine) as session:
        session.execute(
            insert(_TIMELINE),
            [
                _row(seq, at, body)
                for seq, (at, body) in enumerate(zip(TIMES, bodies, strict=True), 1)
            ],
        )
        session.commit()
        rows = session.execute(
            select(_TIMELINE.c.at, _TIMELINE.c.body).order_by(_TIMELINE.c.at)
        ).all()
        noon = TIMES[0]
        before_noon = session.execute(
            select(_TIMELINE.c.seq).where(_TIMELINE.c.at < noon).order_by(_TIMELINE.c.seq)
        ).scalars()

        assert [at for at, _ in rows] == sorted(t.astimezone(UTC) for t in TIMES)
        assert all(at.tzinfo is not None and at.utcoffset() == timedelta(0) for at, _ in rows)
        assert sorted((json.loads(body) for _, body in rows), key=lambda b: b["n"]) == bodies
        assert list(before_noon) == [5]


def _row(seq: int, at: datetime, body: dict[str, object]) -> dict[str, object]:
    return {
        "seq": seq,
        "job_id": f"job-{seq}",
        "event": "started",
        "at": at,
        "stored_at": at,
        "applied": True,
        "rejected_because": None,
        "body": json.dumps(body),
        "raw": None,
    }
