"""The projector process: read the logs in order and apply them to the read store.

Two projections run side by side: ``jobs`` over the event log (``FQ_EVENTS``: jobs,
timelines, metrics, dead letters) and ``workers`` over the heartbeats (``FQ_WORKERS``).

Position lives in the read store (each projection's ``projection_checkpoints`` row, written
with the data), not in NATS. At start each durable consumer is re-created to deliver from
checkpoint + 1, so a fresh store rebuilds from the first event, a restarted projector
resumes exactly where its last commit left off, and nothing waits for an AckWait to expire.

Several projectors may run for one read store (for availability): the one holding the
store's lock (:mod:`ferrisqueue.store.leadership`) projects, the others stand by and take
over when it dies.

The jobs projection may also be split across partitions (``FQ_PROJECTOR_PARTITIONS``,
:mod:`ferrisqueue.domain.partition`): each partition is a projector with its own lock,
consumer and checkpoint, following the whole event log and applying its share of the jobs;
partition 0 also runs the workers projection. Several instances of one partition fail over
as above. Each read store needs its own consumers (``FQ_PROJECTOR_CONSUMER`` names
them): two stores on one consumer would each receive part of the log.

Nothing is skipped, whatever NATS does: a batch is applied only if it follows the checkpoint
without a lost delivery (:mod:`projections.contiguity`), and it commits only if the stored
checkpoint is still the one it was applied on (``commit_at`` is fenced). On a lost delivery
or a moved checkpoint the projector counts it (:mod:`projections.health`), re-reads the
stored checkpoint and re-creates its consumer from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.partition import Partition
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.domain.workers import WORKER_STREAM
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.topology import prepare_streams
from ferrisqueue.runloop import reap
from ferrisqueue.settings import Settings
from ferrisqueue.store.db import init_schema, make_engine
from ferrisqueue.store.leadership import StoreLock
from projections.follow import JOBS, WORKERS, Projection, ProjectionLoop, jobs_projection
from projections.observe import ProjectorMetrics
from projections.partitioning import lock_name, settle

log = logging.getLogger(__name__)

STANDBY_RETRY = 1.0
"""Seconds between a standby projector's attempts to take the lead."""


class Projector:
    """Runs the projections until stopped (or once, for a rebuild or replay)."""

    def __init__(
        self,
        settings: Settings,
        *,
        connect: Callable[[], Awaitable[EventLog]] | None = None,
        metrics: ProjectorMetrics | None = None,
    ) -> None:
        """``connect``: where to get the log (default: connect to ``FQ_NATS_URL``; tests
        pass an in-memory log). The projector closes it when it is done. ``metrics``: where
        to count what the projections apply (:mod:`projections.observe`)."""
        self._settings = settings
        self._partition = settings.projector_share
        self._open_log = connect or self._connect_nats
        self._metrics = metrics
        self._event_log: EventLog | None = None
        self._loops: list[ProjectionLoop] = []
        self._stopping = asyncio.Event()
        self.lost_lead = False
        """Set when the projector stopped because its lock was lost (exit non-zero)."""

    def stop(self) -> None:
        self._stopping.set()

    def health(self) -> str | None:
        """None while both projections apply the log (or while this projector stands by
        for the leader), else what is wrong (the metrics port's ``/healthz``)."""
        if not self._loops:
            return None  # standing by: healthy, ready to take over
        if self._event_log is None or not self._event_log.connected:
            return "the NATS connection is closed"
        down = [loop.name for loop in self._loops if not loop.up]
        return f"not running: {', '.join(down)}" if down else None

    async def run(self) -> None:
        """Follow the logs for ever (until stopped), as the leader of the read store."""
        engine = make_engine(self._settings.effective_database_url)
        init_schema(engine)
        partition = self._partition
        lock = StoreLock(engine, lock_name(partition))
        try:
            if await self._lead(lock):
                await asyncio.to_thread(settle, engine, partition)
                event_log = self._event_log = await self._connect()
                watchdog = asyncio.create_task(self._watch(lock), name="lock-watchdog")
                metrics = self._metrics
                jobs = jobs_projection(partition)
                # The workers projection is small and not partitioned: partition 0 runs it.
                projections = (jobs, WORKERS) if partition.index == 0 else (jobs,)
                loops = self._loops = [
                    ProjectionLoop(
                        event_log,
                        engine,
                        projection,
                        self._consumer_name(projection),
                        batch_size=self._settings.projector_batch,
                        observe=metrics.committed if metrics and projection is jobs else None,
                    )
                    for projection in projections
                ]
                sampler = None
                if metrics is not None:
                    sampler = asyncio.create_task(metrics.sample_lag(event_log, loops), name="lag")
                try:
                    async with asyncio.TaskGroup() as group:
                        for loop in loops:
                            group.create_task(self._run_loop(loop), name=loop.name)
                except* ConfigurationError as fatal:  # a store ahead of its log
                    raise fatal.exceptions[0] from None
                finally:
                    watchdog.cancel()
                    if sampler is not None:
                        await reap(sampler)
                    await event_log.close()
        finally:
            lock.release()
            engine.dispose()

    async def catch_up(self, *, until: datetime | None = None, up_to: int | None = None) -> int:
        """One-shot: apply the event log up to its current end (or to sequence ``up_to``, or
        to ``until``, by the time JetStream stored each message) and return the position
        reached.

        ``fq projections rebuild`` and ``fq replay --until`` run this into a fresh store,
        ``fq projections verify`` into a scratch one. It is one partition, whatever
        ``FQ_PROJECTOR_PARTITIONS`` says: its fold equals the union of the partitions'.
        """
        engine = make_engine(self._settings.effective_database_url)
        init_schema(engine)
        whole = Partition()
        lock = StoreLock(engine, lock_name(whole))
        try:
            if not lock.try_acquire():
                raise ConfigurationError(
                    "a projector is running on this read store; stop it, or rebuild into "
                    "another store (--database-url)"
                )
            await asyncio.to_thread(settle, engine, whole)
            event_log = await self._connect()
            try:
                last = up_to
                if last is None:
                    last = await event_log.last_seq(EVENT_STREAM)
                once = ProjectionLoop(
                    event_log,
                    engine,
                    JOBS,
                    f"fq-rebuild-{new_job_id()}",
                    batch_size=self._settings.projector_batch,
                    last_seq=last,
                    until=until,
                )
                await once.run(asyncio.Event())
                return once.position
            finally:
                await event_log.close()
        finally:
            lock.release()
            engine.dispose()

    async def _run_loop(self, loop: ProjectionLoop) -> None:
        """Run one projection; if it fails for good, stop the other one too.

        The TaskGroup cancels the sibling, but a cancel can be lost: on Python 3.11,
        ``asyncio.wait_for`` (inside every nats-py request) returns the result instead of
        raising when the reply lands in the same turn as the cancel. A sibling that lost it
        ran on, and the projector never exited (seen in CI with a store ahead of its log).
        Setting the shared ``stopping`` ends it at its next check whatever happened."""
        try:
            await loop.run(self._stopping)
        except BaseException:
            self._stopping.set()
            raise

    async def _watch(self, lock: StoreLock) -> None:
        """Stop projecting if the lock is lost: another projector may be leading now."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), STANDBY_RETRY * 5)
            if not await asyncio.to_thread(lock.still_held):
                log.error("lost the read store's lock; stopping so that only one projector leads")
                self.lost_lead = True
                self._stopping.set()

    async def _connect(self) -> EventLog:
        event_log = await self._open_log()
        await prepare_streams(event_log, self._settings, (EVENT_STREAM, WORKER_STREAM))
        return event_log

    async def _connect_nats(self) -> EventLog:
        return await NatsLog.connect(self._settings, name="fq-projector")

    def _consumer_name(self, projection: Projection) -> str:
        return f"{self._settings.projector_consumer}{projection.consumer_suffix}"

    async def _lead(self, lock: StoreLock) -> bool:
        """Wait until this projector holds the store's lock (or is stopped)."""
        if not lock.try_acquire():
            log.info("another projector leads this read store; standing by")
        while not lock.held:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), STANDBY_RETRY)
            if self._stopping.is_set():
                return False
            lock.try_acquire()
        log.info("leading the read store's projection")
        return True
