"""The dead letters read model: every job that was dead-lettered, and whether an operator
redrove or purged it since (``resolution``, ``resolved_by``, ``resolved_at``).

Rows are marked, not deleted, so the dashboard can show what was done and by whom; the
queries list the unresolved ones by default. A job dead-lettered again (after a redrive)
gets a fresh row: the upsert clears the resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import update
from sqlmodel import Session

from ferrisqueue.domain.events import DeadLettered, Purged, Redriven
from ferrisqueue.store.db import upsert
from ferrisqueue.store.models import DeadLetterRow
from projections.metrics import Applied

_TABLE = DeadLetterRow.__table__  # type: ignore[attr-defined]


def write(session: Session, dialect: str, applied: Sequence[Applied]) -> None:
    """Record dead-lettered jobs, redrives and purges, in log order (all rare: row by row)."""
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
                        "last_error": after.last_error,
                        "attempts": after.attempts,
                        "dead_lettered_at": event.at,
                        "resolution": None,
                        "resolved_at": None,
                        "resolved_by": None,
                    }
                ],
            )
        elif isinstance(event, Redriven | Purged):
            session.execute(
                update(_TABLE)
                .where(_TABLE.c.job_id == after.job_id)
                .values(resolution=event.kind.value, resolved_at=event.at, resolved_by=event.actor)
            )
