"""The dead letters read model on SQLite and PostgreSQL: what the projection records on
``dead_lettered``, ``redriven`` and ``purged``, and the filters and pages operators list by."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.domain.events import (
    BaseEvent,
    DeadLettered,
    Failed,
    Purged,
    Redriven,
    Started,
    Submitted,
    encode_event,
)
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.store import queries
from ferrisqueue.store.models import DeadLetterRow
from ferrisqueue.store.queries import DeadLetterFilter
from projections import jobs

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def minute(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def project(engine: Engine, events: list[BaseEvent]) -> None:
    with Session(engine) as session:
        jobs.apply_batch(
            session,
            [
                StoredEvent.decode(seq, e.subject, encode_event(e), e.at)
                for seq, e in enumerate(events, 1)
            ],
        )


def dead(
    job_id: str,
    queue: str,
    type: str,
    at: datetime,
    *,
    reason: str = "attempts exhausted",
    error: str | None = "boom",
) -> list[BaseEvent]:
    """A job that ran once, (failed with ``error``,) and was dead-lettered at ``at``."""
    job = {"job_id": job_id, "queue": queue}
    events: list[BaseEvent] = [
        Submitted(**job, at=at - timedelta(seconds=3), type=type),
        Started(**job, at=at - timedelta(seconds=2), attempt=1, worker="w1"),
    ]
    if error is not None:
        failure = Failed(
            **job, at=at - timedelta(seconds=1), attempt=1, error=error, error_type="error:X"
        )
        events.append(failure)
    return [*events, DeadLettered(**job, at=at, reason=reason)]


def redriven(job_id: str, queue: str, at: datetime, by: str = "alice@ops") -> Redriven:
    return Redriven(job_id=job_id, queue=queue, at=at, attempt=1, actor=by, reason="fixed")


@pytest.fixture
def store(store_engine: Engine) -> Engine:
    events = [
        *dead("d1", "mail", "email", minute(1), error="SMTP Timeout connecting to relay"),
        *dead("d2", "mail", "email", minute(2), reason="given up after 5 deliveries", error=None),
        *dead("d3", "default", "resize", minute(3), reason="permanent", error="bad 100%_image"),
        *dead("d4", "default", "echo", minute(4)),
        redriven("d4", "default", minute(4.5)),
        *dead("d5", "default", "echo", minute(5)),
        Purged(job_id="d5", queue="default", at=minute(5.5), actor="bob@ops", reason="junk"),
        *dead("d6", "default", "echo", minute(6)),
        redriven("d6", "default", minute(6.1)),
        Started(job_id="d6", queue="default", at=minute(6.2), attempt=2, worker="w1"),
        DeadLettered(job_id="d6", queue="default", at=minute(6.3), reason="died again"),
        *dead("d7", "other", "echo", minute(7)),
        *dead("d8", "other", "echo", minute(7)),  # same time as d7: the job id breaks the tie
    ]
    project(store_engine, events)
    return store_engine


def listed(
    engine: Engine, selection: DeadLetterFilter = DeadLetterFilter(), *, resolved: bool = False
) -> list[str]:
    with Session(engine) as session:
        rows = queries.dead_letters(session, selection, include_resolved=resolved)
        return [found.job_id for found in rows]


def row(engine: Engine, job_id: str) -> DeadLetterRow:
    with Session(engine) as session:
        found = session.get(DeadLetterRow, job_id)
        assert found is not None
        return found


def test_a_dead_letter_row_has_what_the_filters_need(store: Engine) -> None:
    found = row(store, "d1")

    assert (found.queue, found.type, found.attempts) == ("mail", "email", 1)
    assert found.reason == "attempts exhausted"
    assert found.last_error == "SMTP Timeout connecting to relay"
    assert found.dead_lettered_at == minute(1)
    assert found.resolution is None and found.resolved_by is None


def test_redriven_and_purged_rows_are_marked_with_who_and_leave_the_default_list(
    store: Engine,
) -> None:
    redrive, purge = row(store, "d4"), row(store, "d5")

    assert (redrive.resolution, redrive.resolved_by, redrive.resolved_at) == (
        "redriven",
        "alice@ops",
        minute(4.5),
    )
    assert (purge.resolution, purge.resolved_by) == ("purged", "bob@ops")
    assert listed(store) == ["d8", "d7", "d6", "d3", "d2", "d1"]
    assert listed(store, resolved=True) == ["d8", "d7", "d6", "d5", "d4", "d3", "d2", "d1"]


def test_a_job_dead_lettered_again_after_a_redrive_is_dead_again(store: Engine) -> None:
    again = row(store, "d6")

    assert again.resolution is None
    assert again.reason == "died again"
    assert again.attempts == 2
    assert again.dead_lettered_at == minute(6.3)


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (DeadLetterFilter(queue="mail"), ["d2", "d1"]),
        (DeadLetterFilter(type="echo"), ["d8", "d7", "d6"]),
        (DeadLetterFilter(queue="default", type="echo"), ["d6"]),
        (DeadLetterFilter(reason="DELIVERIES"), ["d2"]),  # case-insensitive, in the reason
        (DeadLetterFilter(reason="smtp timeout"), ["d1"]),  # ... or in the last error
        (DeadLetterFilter(reason="100%_i"), ["d3"]),  # % and _ are literal, not wildcards
        (DeadLetterFilter(reason="1_0"), []),
        (DeadLetterFilter(since=minute(6.3)), ["d8", "d7", "d6"]),  # since is inclusive
        (DeadLetterFilter(until=minute(2)), ["d1"]),  # until is exclusive
        (DeadLetterFilter(since=minute(2), until=minute(7), queue="mail"), ["d2"]),
    ],
    ids=lambda value: repr(value) if isinstance(value, DeadLetterFilter) else "",
)
def test_filters(store: Engine, selection: DeadLetterFilter, expected: list[str]) -> None:
    assert listed(store, selection) == expected


def test_pages_follow_each_other_through_equal_times(store: Engine) -> None:
    seen: list[str] = []
    cursor: str | None = None
    with Session(store) as session:
        for _ in range(10):
            page = queries.dead_letters(session, after=cursor, limit=2)
            seen += [r.job_id for r in page]
            if len(page) < 2:
                break
            cursor = queries.dead_letter_cursor(page[-1])

    assert seen == listed(store)


@pytest.mark.parametrize("cursor", ["nonsense", "2026-03-01T12:00:00|d1", "|d1", "2026-03-01|"])
def test_a_malformed_cursor_is_a_value_error(store_engine: Engine, cursor: str) -> None:
    with Session(store_engine) as session, pytest.raises(ValueError):
        queries.dead_letters(session, after=cursor)
