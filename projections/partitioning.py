"""Changing how many partitions apply the jobs projection of a read store.

Each partition has its own checkpoint (``jobs/0of2``...), so a store projected by one
partitioning cannot simply be followed by another: a new partition would start from
sequence 0 and apply its jobs' events a second time. At start, before it applies anything,
a projector *settles* the store's checkpoints (:func:`settle`): if they belong to another
partitioning, and every partition of it has stopped at the same position (one projector
always has; several have after a ``fq projections rebuild``, or once they all caught up
with a quiet log), they are replaced, in one transaction, by a checkpoint at that position
for each partition of the new one. Otherwise it refuses to start: the store must be
rebuilt, or the old projectors run until they all caught up.

The old partitioning's projectors must be stopped: their store locks are tried first
(:mod:`ferrisqueue.store.leadership`), and a held one refuses the change. The count is also
recorded in ``schema_info`` (:data:`PARTITIONS_KEY`) at the first start, so projectors
started with different counts on a store where nothing was applied yet are refused too (the
second finds the first's count, and its lock held).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from ferrisqueue.domain.partition import Partition
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.store import queries
from ferrisqueue.store.leadership import StoreLock
from ferrisqueue.store.models import ProjectionCheckpoint, SchemaInfo

log = logging.getLogger(__name__)

LOCK = "projector"
"""The store lock of the jobs projection (of the whole, or suffixed by a partition)."""
_TABLE = ProjectionCheckpoint.__table__  # type: ignore[attr-defined]
PARTITIONS_KEY = "jobs_partitions"
"""``schema_info`` key of the partition count the store's jobs projection runs with: kept
from the first start on, so that projectors started with another count are refused even
before any checkpoint is written."""
_ATTEMPTS = 5
_PAUSE = 0.5


def lock_name(partition: Partition) -> str:
    """The store lock a projector of ``partition`` leads with (``projector``, or
    ``projector-0of2``): two instances of one partition fail over, different ones run
    side by side."""
    return partition.suffixed(LOCK)


class _Busy(ConfigurationError):
    """An old partitioning's lock is held: by one of its projectors, still running, or for
    a moment by a sibling partition settling the same store."""


def settle(engine: Engine, partition: Partition) -> None:
    """Make the store's jobs checkpoints those of ``partition``'s partitioning (see the
    module's notes); :class:`ConfigurationError` if they cannot be. Blocking (a thread)."""
    for attempt in range(_ATTEMPTS):
        try:
            _settle(engine, partition)
            return
        except (IntegrityError, OperationalError, _Busy):
            # Maybe another partition of the new partitioning settled it at the same moment:
            # then the next attempt finds nothing to change.
            if attempt == _ATTEMPTS - 1:
                raise
            time.sleep(_PAUSE)  # a retry delay, off the event loop


def _settle(engine: Engine, partition: Partition) -> None:
    with Session(engine) as session:
        found = queries.partition_checkpoints(session, queries.JOBS_PROJECTION)
        recorded = session.get(SchemaInfo, PARTITIONS_KEY)
        counts = {p.count for p in found} | ({recorded.value} if recorded else set())
        if counts <= {partition.count}:
            if recorded is None:  # a fresh store, or one from before the count was recorded
                session.add(SchemaInfo(key=PARTITIONS_KEY, value=partition.count))
                session.commit()  # two starting at once: one IntegrityError, and a retry
            return
        if len(counts) > 1:
            names = ", ".join(sorted(row.name for row in found.values()))
            raise ConfigurationError(
                f"the read store holds jobs checkpoints of several partitionings ({names}); "
                "rebuild it: fq projections rebuild --database-url <new store>"
            )
        old = Partition(0, counts.pop()).siblings()
        positions = {found[p].position if p in found else 0 for p in old}
        if len(positions) > 1:
            at = ", ".join(f"{p.checkpoint('jobs')} at {found[p].position}" for p in found)
            raise ConfigurationError(
                f"this store was projected by {len(old)} partition(s) that stopped at different "
                f"positions ({at}); run them until they all caught up with a quiet log, or "
                "rebuild the store, before running it with "
                f"FQ_PROJECTOR_PARTITIONS={partition.count}"
            )
        position = positions.pop()
        with _all_locked([lock_name(p) for p in old], engine):
            session.execute(
                delete(_TABLE).where(_TABLE.c.name.in_([r.name for r in found.values()]))
            )
            if position > 0:  # (at 0 there is no checkpoint row: the first commit inserts it)
                updated_at = max(row.updated_at for row in found.values())
                session.execute(
                    insert(_TABLE),
                    [
                        {"name": p.checkpoint(queries.JOBS_PROJECTION), "position": position,
                         "updated_at": updated_at}
                        for p in partition.siblings()
                    ],
                )  # fmt: skip
            session.merge(SchemaInfo(key=PARTITIONS_KEY, value=partition.count))
            session.commit()
        log.warning(
            "the jobs projection was applied by %d partition(s) up to sequence %d: now by %d "
            "from there",
            len(old),
            position,
            partition.count,
        )


@contextlib.contextmanager
def _all_locked(names: list[str], engine: Engine) -> Iterator[None]:
    held: list[StoreLock] = []
    try:
        for name in names:
            lock = StoreLock(engine, name)
            if not lock.try_acquire():
                raise _Busy(
                    f"a projector still leads this read store with the lock {name!r}: stop "
                    "every projector of the old partitioning before changing "
                    "FQ_PROJECTOR_PARTITIONS"
                )
            held.append(lock)
        yield
    finally:
        for lock in held:
            lock.release()
