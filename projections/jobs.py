"""The jobs projection: ``jobs`` (current state) and ``job_events`` (the timeline).

Exactly once: :func:`apply_batch` skips every event at or below the checkpoint and moves the
checkpoint in the same transaction as the rows it changed. A crash before the commit loses
the whole batch (it is applied again from the log); a crash after it cannot apply it twice.

Poison policy: an event that cannot be decoded, or that is an illegal transition, does not
stop the projection. It is *parked* in the job's timeline (``applied = false`` with the
reason, and the raw body when undecodable), where the API and dashboard show it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from ferrisqueue.eventlog import StoredEvent
from ferrisqueue.fold import JobState, apply
from ferrisqueue.store.models import (
    JobEventRow,
    JobRow,
    ProjectionCheckpoint,
)
from ferrisqueue.subjects import parse_job_subject

NAME = "jobs"
"""This projection's checkpoint name."""


def apply_batch(session: Session, batch: Sequence[StoredEvent]) -> int:
    """Apply the events of ``batch`` not applied yet and commit; returns the new checkpoint."""
    checkpoint = session.get(ProjectionCheckpoint, NAME)
    position = checkpoint.position if checkpoint else 0
    fresh = [stored for stored in batch if stored.seq > position]
    if not fresh:
        return position

    job_ids = {_job_id(stored) for stored in fresh} - {None}
    rows = {
        row.job_id: row
        for row in session.exec(select(JobRow).where(col(JobRow.job_id).in_(job_ids)))
    }
    states: dict[str, JobState] = {job_id: row.to_state() for job_id, row in rows.items()}
    last_seq: dict[str, int] = {}

    for stored in fresh:
        session.add(_timeline_row(stored, states, last_seq))

    for job_id, state in states.items():
        if job_id not in last_seq:
            continue
        row = rows.get(job_id)
        if row is None:
            session.add(JobRow.from_state(state, last_seq[job_id]))
        else:
            row.update_from(state, last_seq[job_id])
            session.add(row)

    position, updated_at = fresh[-1].seq, fresh[-1].stored_at
    if checkpoint is None:
        checkpoint = ProjectionCheckpoint(name=NAME, position=position, updated_at=updated_at)
    else:
        checkpoint.position, checkpoint.updated_at = position, updated_at
    session.add(checkpoint)
    session.commit()
    return position


def _timeline_row(
    stored: StoredEvent, states: dict[str, JobState], last_seq: dict[str, int]
) -> JobEventRow:
    """Fold one event into ``states`` and describe it as a timeline row."""
    event = stored.event
    if event is None:
        return JobEventRow(
            seq=stored.seq,
            job_id=_job_id(stored) or "",
            event=stored.subject.rsplit(".", 1)[-1][:32],
            at=stored.stored_at,
            stored_at=stored.stored_at,
            applied=False,
            rejected_because=f"undecodable: {stored.error.reason if stored.error else '?'}",
            raw=stored.data.decode("utf-8", errors="replace"),
        )
    transition = apply(states.get(event.job_id), event)
    if transition.applied and transition.state is not None:
        states[event.job_id] = transition.state
        last_seq[event.job_id] = stored.seq
    return JobEventRow(
        seq=stored.seq,
        job_id=event.job_id,
        event=event.kind.value,
        at=event.at,
        stored_at=stored.stored_at,
        applied=transition.applied,
        rejected_because=transition.rejected_because,
        body=event.model_dump(mode="json", exclude_none=True),
    )


def _job_id(stored: StoredEvent) -> str | None:
    if stored.event is not None:
        return stored.event.job_id
    try:
        return parse_job_subject(stored.subject).job_id
    except ValueError:
        return None
