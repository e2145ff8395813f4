"""The workers projection: the latest heartbeat of each worker, from ``FQ_WORKERS``.

Same exactly-once rule as the jobs projection, with its own checkpoint (a sequence of the
heartbeat stream). A heartbeat that does not decode is skipped with a warning: it describes
nothing but a moment of one worker, and the next one will.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from sqlmodel import Session

from ferrisqueue.domain.workers import Heartbeat
from ferrisqueue.store import queries
from ferrisqueue.store.db import checkpoint_at, commit_at, upsert
from ferrisqueue.store.models import WorkerRow

log = logging.getLogger(__name__)

NAME = queries.WORKERS_PROJECTION

_TABLE = WorkerRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class StoredHeartbeat:
    seq: int
    stored_at: datetime
    data: bytes


def apply_batch(
    session: Session, batch: Sequence[StoredHeartbeat], *, after: int | None = None
) -> int:
    """Apply the heartbeats not applied yet (the newest per worker wins) and commit; with
    ``after``, only if the checkpoint is still there (see :func:`projections.jobs.apply_batch`)."""
    position = checkpoint_at(session, NAME, expected=after)
    fresh = [item for item in batch if item.seq > position]
    if not fresh:
        return position
    latest: dict[str, Heartbeat] = {}
    for item in fresh:
        try:
            beat = Heartbeat.model_validate_json(item.data)
        except ValidationError as exc:
            log.warning("skipping undecodable heartbeat at seq %d: %s", item.seq, exc)
            continue
        latest[beat.worker_id] = beat
    dialect = session.get_bind().dialect.name
    if latest:
        session.execute(
            upsert(dialect, _TABLE, "worker_id"),
            [
                {
                    **beat.model_dump(exclude={"kind", "at"}),
                    "last_seen_at": beat.at,
                    "stopped": beat.kind == "stopped",
                }
                for beat in latest.values()
            ],
        )
    return commit_at(session, NAME, fresh[-1].seq, fresh[-1].stored_at, after=position)
