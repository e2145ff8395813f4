"""Failed attempts for the dashboard's Errors page, folded in the same transaction as the
jobs: one ``job_errors`` row per applied ``failed`` event, keyed by its stream sequence.

Errors are grouped by a short hash of the error type and message (:func:`group_key`), which
the page counts, trends over time and lists the jobs of.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import insert
from sqlmodel import Session

from ferrisqueue.domain.events import Failed
from ferrisqueue.domain.fold import JobState
from ferrisqueue.store.models import JobErrorRow

_TABLE = JobErrorRow.__table__  # type: ignore[attr-defined]
_TYPE_LIMIT = 200


def group_key(error_type: str, message: str) -> str:
    """The group of an error: 16 hex digits of a hash of its type and message."""
    return hashlib.sha256(f"{error_type}\n{message}".encode()).hexdigest()[:16]


def write(
    session: Session, failed: Sequence[tuple[int, Failed]], states: dict[str, JobState]
) -> None:
    """Insert a row for each applied ``failed`` event of a batch, given with its stream
    sequence (``states``: the jobs after the batch, for their queue and type)."""
    rows = []
    for seq, event in failed:
        job = states[event.job_id]
        error_type = event.error_type[:_TYPE_LIMIT]
        rows.append(
            {
                "seq": seq,
                "job_id": event.job_id,
                "at": event.at,
                "queue": job.queue,
                "type": job.type,
                "group_key": group_key(error_type, event.error),
                "error_type": error_type,
                "message": event.error,
                "final": event.retry_at is None,
            }
        )
    if rows:
        session.execute(insert(_TABLE), rows)
