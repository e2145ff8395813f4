"""Comparing a read store with a fresh one-partition fold of the log: the jobs and timelines
(:func:`projections.verify.compare`, what ``fq projections verify`` runs) and the aggregates
every partition of a partitioned projector writes into (metrics, queue depth, errors, dead
letters), which that comparison leaves out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from ferrisqueue.store import queries
from ferrisqueue.store.db import make_engine
from ferrisqueue.store.models import DeadLetterRow, JobErrorRow, MetricsMinuteRow, QueueDepthRow
from projections.runner import Projector
from projections.verify import Comparison, compare

AGGREGATES = {
    "metrics_minute": (MetricsMinuteRow, ("minute", "queue", "type")),
    "queue_depth": (QueueDepthRow, ("queue", "state")),
    "job_errors": (JobErrorRow, ("seq",)),
    "dead_letters": (DeadLetterRow, ("job_id",)),
}
"""Aggregate tables, with their keys. (``queue_depth_minute``, the depth each minute ended
with, is left out: with partitions it records the depth as the partitions' commits
interleaved, not as the log orders the events.)"""


def aggregates(engine: Engine) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """Every row of the aggregate tables, by table and key (``queue_depth`` rows at 0 left
    out: a state emptied again and a state never entered are the same depth)."""
    found: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    with Session(engine) as session:
        for name, (model, key) in AGGREGATES.items():
            rows = (row.model_dump() for row in session.exec(select(model)))
            found[name] = {
                tuple(row[k] for k in key): row
                for row in rows
                if not (name == "queue_depth" and row["depth"] == 0)
            }
    return found


async def rebuild(
    settings: Settings, folder: Path, connect: Callable[[], Awaitable[EventLog]] | None = None
) -> Engine:
    """A fresh one-partition fold of the whole log, into a new SQLite store in ``folder``
    (``connect``: the log, default NATS at ``settings``)."""
    url = f"sqlite:///{folder / 'rebuilt.db'}"
    fresh = settings.model_copy(update={"database_url": url})
    await Projector(fresh, connect=connect).catch_up()
    return make_engine(url)


def checkpoint(engine: Engine) -> int:
    """Up to where the jobs projection has applied every event (every partition)."""
    with Session(engine) as session:
        return queries.jobs_checkpoint(session)


def compare_with(live: Engine, fresh: Engine) -> Comparison:
    """``verify``'s comparison up to the live store's checkpoint, and the aggregates: a
    difference in those is added to its differences."""
    result = compare(live, fresh, checkpoint(live))
    mine, theirs = aggregates(live), aggregates(fresh)
    for table in AGGREGATES:
        for key in sorted(mine[table].keys() | theirs[table].keys(), key=repr):
            if mine[table].get(key) != theirs[table].get(key):
                result.differences.append(
                    f"{table} {key}: {mine[table].get(key)} live, {theirs[table].get(key)} rebuilt"
                )
    return result
