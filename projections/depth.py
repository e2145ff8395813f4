"""Queue depth by state, and its history by the minute, folded in the same transaction as
the jobs (so a batch applied twice or half is impossible, as for every table of this
projection).

A job counts in one state while it is unfinished: ``pending:<reason>`` or ``running``. Each
applied event moves it from the state before to the state after (a creation only adds, a
finish only removes). The gauge (``queue_depth``) is read for the queues a batch touches,
moved event by event in log order, and the depth every moved state had at the end of each
minute it changed in is written to ``queue_depth_minute``; a later batch that touches the
same minute overwrites it with the newer depth, so batches of any size give the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.states import JobStatus
from ferrisqueue.store.db import upsert
from ferrisqueue.store.models import QueueDepthMinuteRow, QueueDepthRow
from projections.metrics import Applied

_GAUGE = QueueDepthRow.__table__  # type: ignore[attr-defined]
_HISTORY = QueueDepthMinuteRow.__table__  # type: ignore[attr-defined]


def state_of(job: JobState | None) -> str | None:
    """The depth state ``job`` counts in; None when it counts in none (absent or finished)."""
    if job is None or job.status.is_terminal:
        return None
    if job.status is JobStatus.PENDING and job.pending_reason is not None:
        return f"pending:{job.pending_reason.value}"
    return job.status.value


def write(session: Session, dialect: str, applied: Sequence[Applied]) -> None:
    """Move the gauges of the queues ``applied`` touches and record their minutes."""
    moves = [
        (after.queue, old, new, event.at.replace(second=0, microsecond=0))
        for before, event, after in applied
        if (old := state_of(before)) != (new := state_of(after))
    ]
    if not moves:
        return
    queues = {queue for queue, *_ in moves}
    gauge: dict[tuple[str, str], int] = {
        (row.queue, row.state): row.depth
        for row in session.execute(select(_GAUGE).where(_GAUGE.c.queue.in_(queues)))
    }
    history: dict[tuple[str, str, Any], int] = {}
    for queue, old, new, minute in moves:
        for state, step in ((old, -1), (new, 1)):
            if state is not None:
                depth = gauge[queue, state] = gauge.get((queue, state), 0) + step
                history[queue, state, minute] = depth
    touched = {(queue, state) for queue, state, _ in history}
    session.execute(
        upsert(dialect, _GAUGE, "queue", "state"),
        [{"queue": q, "state": s, "depth": gauge[q, s]} for q, s in touched],
    )
    session.execute(
        upsert(dialect, _HISTORY, "queue", "state", "minute"),
        [{"queue": q, "state": s, "minute": m, "depth": d} for (q, s, m), d in history.items()],
    )
