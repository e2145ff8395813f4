"""The jobs projection: ``jobs`` (current state), ``job_events`` (the timeline),
``metrics_minute``, ``queue_depth`` (and its minutes), ``job_errors`` and ``dead_letters``,
all from the event log in one transaction.

Exactly once: :func:`apply_batch` skips every event at or below the checkpoint and moves the
checkpoint in the same transaction as the rows it changed. A crash before the commit loses
the whole batch (it is applied again from the log); a crash after it cannot apply it twice.
The checkpoint moves only from where this batch found it (:func:`commit_at` is fenced), and
the runner hands over only batches that follow it without a gap (:mod:`.contiguity`), so no
event is skipped either.

Writes are set-based (one multi-row insert for the timeline, one upsert for the jobs) so a
batch costs a handful of statements, not one per event; those two go to the driver as tuples
(:mod:`ferrisqueue.store.bulk`), and a timeline row keeps the event's bytes as received
rather than a re-serialised copy.

Poison policy: an event that cannot be decoded, or that is an illegal transition, does not
stop the projection. It is *parked* in the job's timeline (``applied = false`` with the
reason, and the raw body when undecodable), where the API and dashboard show it.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select, text
from sqlalchemy.engine import Dialect
from sqlmodel import Session

from ferrisqueue.domain.events import Failed
from ferrisqueue.domain.fold import JobState, apply, evolve
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.domain.subjects import parse_job_subject
from ferrisqueue.store import queries
from ferrisqueue.store.bulk import BulkWriter
from ferrisqueue.store.db import checkpoint_at, commit_at
from ferrisqueue.store.models import (
    JOB_COLUMNS,
    JobEventRow,
    JobRow,
    job_row,
    state_from_row,
)
from projections import dead_letters, depth, errors, health, metrics
from projections.metrics import Applied

NAME = queries.JOBS_PROJECTION
"""This projection's checkpoint name (of its one partition; see :class:`JobsProjection`)."""
AGGREGATES_LOCK = zlib.crc32(b"ferrisqueue:jobs-aggregates")
"""PostgreSQL transaction lock taken by a partition before it writes the shared aggregates."""


class Passed(NamedTuple):
    """An event of another partition's job: applied by that partition, only passed over
    here (the checkpoint moves past it), so it is never decoded."""

    seq: int
    stored_at: datetime


_JOBS = JobRow.__table__  # type: ignore[attr-defined]
_CREATION = ("payload", "queue", "type", "created_at", "submitted_by")
"""Columns only a job's creation sets: an update leaves them (and need not send them)."""
_TIMELINE = JobEventRow.__table__  # type: ignore[attr-defined]
_TIMELINE_COLUMNS = (
    "seq", "job_id", "event", "at", "stored_at", "actor", "applied", "rejected_because", "body",
    "raw",
)  # fmt: skip
_APPLIED = _TIMELINE_COLUMNS.index("applied")


@functools.cache
def _writers(dialect: Dialect) -> tuple[BulkWriter, BulkWriter]:
    """The timeline's insert and the jobs' upsert, prepared once per dialect."""
    return (
        BulkWriter(_TIMELINE, _TIMELINE_COLUMNS, dialect),
        BulkWriter(_JOBS, JOB_COLUMNS, dialect, key=("job_id",), keep=_CREATION),
    )


CACHE_LIMIT = 50_000
"""Unfinished jobs whose state :class:`JobsProjection` keeps between batches (a job not
among them is read from the store). Kept without payloads, 50,000 take about 25 MiB
(470 bytes each, measured)."""


class JobsProjection:
    """The jobs projection, keeping the states of unfinished jobs between batches, so that a
    job's ``started`` and outcome need not read the row its ``submitted`` wrote (that read was
    a sixth of the projector's time).

    The cache is valid because only the projector that holds the store's lock (its
    partition's lock, when partitioned) writes these jobs' rows
    (:mod:`ferrisqueue.store.leadership`), and one instance serves one run of it: a
    restart, a rebuild or a replay starts empty. It is updated only after a batch committed
    and emptied when one fails, so it never holds what the store does not. It is
    also emptied if the checkpoint moved since this instance's last batch: another projector
    wrote the store meanwhile (a leader that had not noticed yet that it lost the lock).
    Finished jobs leave it: their rare later events (a redrive) read the row, which the
    cleanup task may have deleted.
    """

    def __init__(
        self,
        limit: int = CACHE_LIMIT,
        *,
        on_commit: Callable[[Sequence[Applied]], None] | None = None,
        name: str = NAME,
        shared: bool = False,
    ) -> None:
        """``on_commit``: called with the events of each batch once it is committed (the
        projector's Prometheus counters, :mod:`projections.observe`). ``name``: the
        checkpoint (a partition's, ``jobs/0of2``); ``shared``: other partitions write the
        same aggregates concurrently (see :func:`_apply`)."""
        self._name = name
        self._shared = shared
        self._limit = limit
        self._on_commit = on_commit
        self._states: dict[str, JobState] = {}
        self._position: int | None = None
        """The checkpoint as this instance's last batch left it (None: no batch yet)."""

    @property
    def cached(self) -> int:
        return len(self._states)

    def apply_batch(
        self, session: Session, batch: Sequence[StoredEvent], *, after: int | None = None
    ) -> int:
        """:func:`apply_batch` with the cache."""
        try:
            position = checkpoint_at(session, self._name, expected=after)
            if position != self._position:
                self._states.clear()  # written by another projector since: the rows may differ
            position, changed, applied = _apply(
                session, batch, position, self._states, name=self._name, shared=self._shared
            )
        except BaseException:
            self._states.clear()
            raise
        self._position = position
        if self._on_commit is not None and applied:
            self._on_commit(applied)
        for job_id, state in changed.items():
            self._states.pop(job_id, None)  # re-inserted last: the dict's order is its age
            if not state.status.is_terminal:
                # Without its payload, which the row keeps (see _CREATION), so that a state
                # costs a few hundred bytes however large the job.
                self._states[job_id] = evolve(state, {"payload": {}}) if state.payload else state
        while len(self._states) > self._limit:
            del self._states[next(iter(self._states))]
        return position


def apply_batch(
    session: Session, batch: Sequence[StoredEvent | Passed], *, after: int | None = None
) -> int:
    """Apply the events of ``batch`` not applied yet and commit; returns the new checkpoint.

    With ``after``, the batch was checked to follow that checkpoint without a gap
    (:mod:`projections.contiguity`): if the store's checkpoint is elsewhere, nothing is
    applied and :class:`~ferrisqueue.errors.CheckpointMoved` is raised."""
    return _apply(session, batch, checkpoint_at(session, NAME, expected=after), {})[0]


def _apply(
    session: Session,
    batch: Sequence[StoredEvent | Passed],
    position: int,
    known: dict[str, JobState],
    *,
    name: str = NAME,
    shared: bool = False,
) -> tuple[int, dict[str, JobState], list[Applied]]:
    """Apply and commit ``batch`` after the store's checkpoint ``position`` (read in this
    transaction), given the ``known`` states of some jobs (as the store holds them); returns
    the new checkpoint, the states of the jobs it changed and the events it applied.

    ``Passed`` items (other partitions' events) only move the checkpoint. With ``shared``,
    other partitions write the aggregates (metrics, depth) concurrently, and those are read,
    merged in Python and written back: on PostgreSQL (read committed) two such merges could
    lose one's increments, so a partition takes a transaction lock before them. (SQLite
    needs none: the timeline insert before them already holds the database's one write lock
    until the commit.) Timelines, jobs, errors and dead letters are per job: never shared."""
    after = [stored for stored in batch if stored.seq > position]
    if not after:
        return position, {}, []
    last = after[-1]
    fresh = [stored for stored in after if not isinstance(stored, Passed)]
    if not fresh:
        return commit_at(session, name, last.seq, last.stored_at, after=position), {}, []

    job_ids = {job_id for stored in fresh if (job_id := _job_id(stored))}
    states = {job_id: known[job_id] for job_id in job_ids if job_id in known}
    if unknown := job_ids - states.keys():
        states.update(
            (row.job_id, state_from_row(dict(row._mapping)))
            for row in session.execute(select(_JOBS).where(_JOBS.c.job_id.in_(unknown)))
        )
    last_seq: dict[str, int] = {}
    applied: list[Applied] = []
    orphans: list[StoredEvent] = []
    timeline = [_timeline_row(stored, states, last_seq, applied, orphans) for stored in fresh]

    dialect = session.get_bind().dialect
    timeline_writer, jobs_writer = _writers(dialect)
    timeline_writer.execute(session, timeline)
    changed = {job_id: states[job_id] for job_id in last_seq}
    jobs_writer.execute(
        session, [job_row(state, last_seq[job_id]) for job_id, state in changed.items()]
    )
    if shared and applied and dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AGGREGATES_LOCK})
    metrics.write(session, dialect.name, applied)
    depth.write(session, dialect.name, applied)
    failed = [
        (stored.seq, stored.event)
        for stored, row in zip(fresh, timeline, strict=True)
        if row[_APPLIED] and isinstance(stored.event, Failed)
    ]
    errors.write(session, failed, states)
    dead_letters.write(session, dialect.name, applied)
    if orphans:
        first = orphans[0]
        health.count(
            session,
            name,
            f"{len(orphans)} event(s) for jobs the store never saw created, the first at "
            f"sequence {first.seq} ({first.subject})",
            fresh[-1].stored_at,
            orphan_events=len(orphans),
        )
    return commit_at(session, name, last.seq, last.stored_at, after=position), changed, applied


def _timeline_row(
    stored: StoredEvent,
    states: dict[str, JobState],
    last_seq: dict[str, int],
    applied: list[Applied],
    orphans: list[StoredEvent],
) -> tuple[Any, ...]:
    """Fold one event into ``states`` (noting it in ``applied`` if it was, in ``orphans`` if
    its job was never created) and describe it as a timeline row (:data:`_TIMELINE_COLUMNS`)."""
    event = stored.event
    text = stored.data.decode("utf-8", errors="replace")
    if event is None:
        reason = stored.error.reason if stored.error else "?"
        job_id = _job_id(stored) or ""
        kind = stored.subject.rsplit(".", 1)[-1][:32]
        at = stored.stored_at
        return (stored.seq, job_id, kind, at, at, None, False, f"undecodable: {reason}", None, text)
    before = states.get(event.job_id)
    transition = apply(before, event)
    if transition.applied and transition.state is not None:
        states[event.job_id] = transition.state
        last_seq[event.job_id] = stored.seq
        applied.append((before, event, transition.state))
    elif transition.state is None:
        orphans.append(stored)
    return (
        stored.seq,
        event.job_id,
        event.event,
        event.at,
        stored.stored_at,
        event.actor,
        transition.applied,
        transition.rejected_because,
        text,
        None,
    )


def _job_id(stored: StoredEvent) -> str | None:
    if stored.event is not None:
        return stored.event.job_id
    try:
        return parse_job_subject(stored.subject).job_id
    except ValueError:
        return None
