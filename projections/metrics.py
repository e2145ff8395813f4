"""Per-minute metrics by queue and job type, folded in the same transaction as the jobs.

Counts of each outcome by the minute of the event's own time, and two latency histograms:
wait (the job became runnable -> a worker started it) and run (started -> outcome, as the
worker measured it). Existing minutes are merged, never overwritten, so batches of any size
give the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, tuple_
from sqlmodel import Session

from ferrisqueue.domain import histogram
from ferrisqueue.domain.events import BaseEvent, Failed, JobSpec, Started, Succeeded
from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.states import JobStatus, PendingReason
from ferrisqueue.store.db import upsert
from ferrisqueue.store.models import MetricsMinuteRow

Applied = tuple[JobState | None, BaseEvent, JobState]
"""An applied event with the state before and after it."""

_TABLE = MetricsMinuteRow.__table__  # type: ignore[attr-defined]
_KEY = ("minute", "queue", "type")
_COUNTED = ("submitted", "started", "succeeded", "failed", "dead_lettered", "canceled")


def minute_rows(applied: Sequence[Applied]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The metrics the ``applied`` events add, by (minute, queue, type). Pure."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for before, event, after in applied:
        # A job created for later (``scheduled``) is counted as submitted all the same.
        kind = "submitted" if isinstance(event, JobSpec) else event.event
        if kind not in _COUNTED:
            continue
        key = (event.at.replace(second=0, microsecond=0), after.queue, after.type)
        row = rows.get(key)
        if row is None:  # not setdefault: that would build an empty row for every event
            row = rows[key] = _empty(key)
        row[kind] += 1
        if (wait := wait_ms(before, event)) is not None:
            histogram.record(row["wait_hist"], wait)
        if isinstance(event, Succeeded | Failed) and event.duration_ms is not None:
            histogram.record(row["run_hist"], event.duration_ms)
    return rows


def write(session: Session, dialect: str, applied: Sequence[Applied]) -> None:
    """Merge the minutes ``applied`` touches into the table."""
    rows = minute_rows(applied)
    if not rows:
        return
    keys = [_TABLE.c[k] for k in _KEY]
    for existing in session.execute(select(_TABLE).where(tuple_(*keys).in_(list(rows)))):
        found = existing._mapping
        row = rows[tuple(found[k] for k in _KEY)]
        for name in _COUNTED:
            row[name] += found[name]
        for name in ("wait_hist", "run_hist"):
            row[name] = histogram.merge([row[name], found[name]])
    session.execute(upsert(dialect, _TABLE, *_KEY), list(rows.values()))


def wait_ms(before: JobState | None, event: BaseEvent) -> float | None:
    """How long a job waited for a worker, if ``event`` is the ``started`` that ended a
    wait in the queue (not a start after a lost attempt): from when it became runnable."""
    if isinstance(event, Started) and before is not None and _was_queued(before):
        return max(0.0, (event.at - before.updated_at).total_seconds() * 1000)
    return None


def _was_queued(state: JobState) -> bool:
    return state.status is JobStatus.PENDING and state.pending_reason is PendingReason.QUEUED


def _empty(key: tuple[Any, ...]) -> dict[str, Any]:
    return {
        **dict(zip(_KEY, key, strict=True)),
        **dict.fromkeys(_COUNTED, 0),
        "wait_hist": {},
        "run_hist": {},
    }
