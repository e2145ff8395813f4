"""The jobs projection: ``jobs`` (current state), ``job_events`` (the timeline),
``metrics_minute`` and ``dead_letters``, all from the event log in one transaction.

Exactly once: :func:`apply_batch` skips every event at or below the checkpoint and moves the
checkpoint in the same transaction as the rows it changed. A crash before the commit loses
the whole batch (it is applied again from the log); a crash after it cannot apply it twice.

Writes are set-based (one multi-row insert for the timeline, one upsert for the jobs) so a
batch costs a handful of statements, not one per event.

Poison policy: an event that cannot be decoded, or that is an illegal transition, does not
stop the projection. It is *parked* in the job's timeline (``applied = false`` with the
reason, and the raw body when undecodable), where the API and dashboard show it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlmodel import Session

from ferrisqueue.eventlog import StoredEvent
from ferrisqueue.fold import JobState, apply
from ferrisqueue.store import queries
from ferrisqueue.store.db import commit_at, upsert
from ferrisqueue.store.models import (
    JobEventRow,
    JobRow,
    job_columns,
    state_from_row,
)
from ferrisqueue.subjects import parse_job_subject
from projections import dead_letters, metrics
from projections.metrics import Applied

NAME = queries.JOBS_PROJECTION
"""This projection's checkpoint name."""

_JOBS = JobRow.__table__  # type: ignore[attr-defined]
_TIMELINE = JobEventRow.__table__  # type: ignore[attr-defined]


def apply_batch(session: Session, batch: Sequence[StoredEvent]) -> int:
    """Apply the events of ``batch`` not applied yet and commit; returns the new checkpoint."""
    position = queries.checkpoint(session, NAME)
    fresh = [stored for stored in batch if stored.seq > position]
    if not fresh:
        return position

    job_ids = {job_id for stored in fresh if (job_id := _job_id(stored))}
    states: dict[str, JobState] = {
        row.job_id: state_from_row(dict(row._mapping))
        for row in session.execute(select(_JOBS).where(_JOBS.c.job_id.in_(job_ids)))
    }
    last_seq: dict[str, int] = {}
    applied: list[Applied] = []
    timeline = [_timeline_row(stored, states, last_seq, applied) for stored in fresh]

    dialect = session.get_bind().dialect.name
    session.execute(insert(_TIMELINE), timeline)
    changed = [job_columns(states[job_id], seq) for job_id, seq in last_seq.items()]
    if changed:
        session.execute(upsert(dialect, _JOBS, "job_id"), changed)
    metrics.write(session, dialect, applied)
    dead_letters.write(session, dialect, applied)
    return commit_at(session, NAME, fresh[-1].seq, fresh[-1].stored_at)


def _timeline_row(
    stored: StoredEvent,
    states: dict[str, JobState],
    last_seq: dict[str, int],
    applied: list[Applied],
) -> dict[str, Any]:
    """Fold one event into ``states`` (noting it in ``applied`` if it was) and describe it
    as a timeline row."""
    event = stored.event
    if event is None:
        reason = stored.error.reason if stored.error else "?"
        return {
            "seq": stored.seq,
            "job_id": _job_id(stored) or "",
            "event": stored.subject.rsplit(".", 1)[-1][:32],
            "at": stored.stored_at,
            "stored_at": stored.stored_at,
            "applied": False,
            "rejected_because": f"undecodable: {reason}",
            "body": None,
            "raw": stored.data.decode("utf-8", errors="replace"),
        }
    before = states.get(event.job_id)
    transition = apply(before, event)
    if transition.applied and transition.state is not None:
        states[event.job_id] = transition.state
        last_seq[event.job_id] = stored.seq
        applied.append((before, event, transition.state))
    return {
        "seq": stored.seq,
        "job_id": event.job_id,
        "event": event.kind.value,
        "at": event.at,
        "stored_at": stored.stored_at,
        "applied": transition.applied,
        "rejected_because": transition.rejected_because,
        "body": event.model_dump(mode="json", exclude_none=True),
        "raw": None,
    }


def _job_id(stored: StoredEvent) -> str | None:
    if stored.event is not None:
        return stored.event.job_id
    try:
        return parse_job_subject(stored.subject).job_id
    except ValueError:
        return None
