"""``fq projections verify``: compare the live read store with a fresh fold of the log.

The log is folded again, by the same projection code, into a scratch SQLite store up to the
live store's checkpoint (the lowest of its partitions', if the jobs projection is
partitioned: every event up to it is applied, whichever partition owns it); then the two
``jobs`` tables and timelines are compared row by row.
A job the live projector changed after that checkpoint is left out (it is compared on the
next run), so the check can run while the system works.

A finished job missing from the live store together with its whole timeline is what a
``cleanup`` job with ``target: "read_store"`` leaves on purpose: it is counted apart, not as
a difference.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from ferrisqueue.domain.states import JobStatus
from ferrisqueue.settings import Settings
from ferrisqueue.store import queries
from ferrisqueue.store.db import make_engine
from ferrisqueue.store.models import JobEventRow, JobRow
from projections.runner import Projector

SHOWN = 20
"""Differences printed in full; the rest are counted."""
_FINISHED = frozenset(status.value for status in JobStatus if status.is_terminal)


@dataclass
class Comparison:
    """What differs between the live store and the fold of the log up to ``position``."""

    position: int
    jobs_compared: int = 0
    changed_since: int = 0
    """Jobs the live store changed after ``position``: not comparable in this run."""
    cleaned_up: int = 0
    differences: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [
            f"compared {self.jobs_compared} jobs up to stream sequence {self.position} "
            f"({self.changed_since} changed since, skipped; {self.cleaned_up} finished jobs "
            f"removed by a read-store cleanup)",
            *self.differences[:SHOWN],
        ]
        if len(self.differences) > SHOWN:
            lines.append(f"... and {len(self.differences) - SHOWN} more")
        lines.append(f"{len(self.differences)} differences")
        return "\n".join(lines)


async def verify(settings: Settings) -> Comparison:
    """Fold the log into a scratch store up to the live checkpoint and compare."""
    live = make_engine(settings.effective_database_url)
    try:
        with Session(live) as session:
            position = queries.jobs_checkpoint(session)
        with tempfile.TemporaryDirectory(prefix="fq-verify-") as scratch:
            url = f"sqlite:///{Path(scratch) / 'fold.db'}"
            fresh = make_engine(url)
            try:
                await Projector(settings.model_copy(update={"database_url": url})).catch_up(
                    up_to=position
                )
                return compare(live, fresh, position)
            finally:
                fresh.dispose()
    finally:
        live.dispose()


def compare(live: Engine, fresh: Engine, position: int) -> Comparison:
    """Compare two stores' ``jobs`` rows and timelines, up to stream sequence ``position``."""
    live_rows, live_timeline = _read(live, position)
    fresh_rows, fresh_timeline = _read(fresh, position)
    result = Comparison(position)
    for job_id, expected in fresh_rows.items():
        found = live_rows.get(job_id)
        if found is not None and found["last_seq"] > position:
            result.changed_since += 1
            continue
        result.jobs_compared += 1
        if found is None:
            if job_id not in live_timeline and expected["status"] in _FINISHED:
                result.cleaned_up += 1
            else:
                result.differences.append(
                    f"job {job_id}: missing from the live store (the log says "
                    f"{expected['status']}, sequence {expected['last_seq']})"
                )
            continue
        result.differences += [
            f"job {job_id}: {name} is {found[name]!r} in the live store, {value!r} in the log"
            for name, value in expected.items()
            if found[name] != value
        ]
    for job_id, found in live_rows.items():
        if job_id not in fresh_rows and found["last_seq"] <= position:
            result.differences.append(f"job {job_id}: in the live store, not in the log")
    for job_id, seqs in fresh_timeline.items():
        if job_id not in live_rows and job_id not in live_timeline:
            continue  # counted above (missing, or cleaned up)
        if missing := sorted(seqs - live_timeline.get(job_id, set())):
            result.differences.append(f"job {job_id}: events never applied at {missing}")
    for job_id, seqs in live_timeline.items():
        if extra := sorted(seqs - fresh_timeline.get(job_id, set())):
            result.differences.append(f"job {job_id}: timeline rows not in the log at {extra}")
    return result


def _read(engine: Engine, position: int) -> tuple[dict[str, dict[str, Any]], dict[str, set[int]]]:
    with Session(engine) as session:
        rows = {row.job_id: row.model_dump() for row in session.exec(select(JobRow))}
        timeline: dict[str, set[int]] = defaultdict(set)
        query = select(JobEventRow.job_id, JobEventRow.seq).where(col(JobEventRow.seq) <= position)
        for job_id, seq in session.exec(query):
            timeline[job_id].add(seq)
    return rows, dict(timeline)
