"""The dead letters read model: every job that was dead-lettered, and when it was redriven."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import update
from sqlmodel import Session

from ferrisqueue.events import DeadLettered, Redriven
from ferrisqueue.store.db import upsert
from ferrisqueue.store.models import DeadLetterRow
from projections.metrics import Applied

_TABLE = DeadLetterRow.__table__  # type: ignore[attr-defined]


def write(session: Session, dialect: str, applied: Sequence[Applied]) -> None:
    """Record dead-lettered jobs and redrives, in log order (both are rare: row by row)."""
    for _before, event, after in applied:
        if isinstance(event, DeadLettered):
            session.execute(
                upsert(dialect, _TABLE, "job_id"),
                [
                    {
                        "job_id": after.job_id,
                        "queue": after.queue,
                        "type": after.type,
                        "reason": event.reason,
                        "attempts": after.attempts,
                        "dead_lettered_at": event.at,
                        "redriven_at": None,
                    }
                ],
            )
        elif isinstance(event, Redriven):
            session.execute(
                update(_TABLE).where(_TABLE.c.job_id == after.job_id).values(redriven_at=event.at)
            )
