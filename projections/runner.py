"""The projector process: read the logs in order and apply them to the read store.

Two projections run side by side: ``jobs`` over the event log (``FQ_EVENTS``: jobs,
timelines, metrics, dead letters) and ``workers`` over the heartbeats (``FQ_WORKERS``).

Position lives in the read store (each projection's ``projection_checkpoints`` row, written
with the data), not in NATS. At start each durable consumer is re-created to deliver from
checkpoint + 1, so a fresh store rebuilds from the first event, a restarted projector
resumes exactly where its last commit left off, and nothing waits for an AckWait to expire.

Several projectors may run for one read store (for availability): the one holding the
store's lock (:mod:`ferrisqueue.store.leadership`) projects, the others stand by and take
over when it dies. Each read store needs its own consumers (``FQ_PROJECTOR_CONSUMER`` names
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
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.domain.events import utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.domain.subjects import ALL_JOB_EVENTS, EVENT_STREAM
from ferrisqueue.domain.workers import WORKER_STREAM, WORKER_SUBJECTS
from ferrisqueue.errors import CheckpointMoved, ConfigurationError, FerrisQueueError
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.port import Consumer, Delivery
from ferrisqueue.log.service_loop import RESTART
from ferrisqueue.log.topology import PROJECTOR_CONSUMER, ensure_streams, load_consumer_definition
from ferrisqueue.settings import Settings
from ferrisqueue.store import queries
from ferrisqueue.store.db import init_schema, make_engine
from ferrisqueue.store.leadership import StoreLock
from projections import health, jobs, workers
from projections.contiguity import Gap, contiguous

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 1.0
BURST_LINGER = 0.01
"""Seconds a burst waits to fill up: fewer, larger transactions for 10 ms of latency."""
PIPELINE_DEPTH = 4
"""Bursts received ahead of the one being applied."""
UNANSWERED_LIMIT = 10.0
"""Seconds of unanswered pull requests (the consumer lost its leader, or was deleted) after
which the projector re-creates its consumer from the stored checkpoint."""
STANDBY_RETRY = 1.0
"""Seconds between a standby projector's attempts to take the lead."""


class ApplyBatch(Protocol):
    """Apply a batch that follows checkpoint ``after`` and commit; returns the new checkpoint
    (raises :class:`CheckpointMoved` if the store's checkpoint is not at ``after``)."""

    def __call__(
        self, session: Session, batch: Sequence[Any], *, after: int | None = None
    ) -> int: ...


@dataclass(frozen=True)
class Projection:
    """One fold: which stream, which consumer definition, how to decode and apply."""

    name: str
    stream: str
    subjects: str
    """The consumer's filter: the subjects of ``stream`` this projection folds."""
    definition: str
    consumer_suffix: str
    decode: Callable[[Delivery], Any]
    applier: Callable[[], ApplyBatch]
    """Makes the apply function of one run (which may keep state between its batches).
    Both it and ``decode`` give and take items with ``seq`` and ``stored_at``."""


class _LostDeliveries(Exception):
    """The consumer skipped messages the stream holds: resume from the checkpoint."""

    def __init__(self, gap: Gap) -> None:
        super().__init__(str(gap))
        self.gap = gap


def _heartbeat(msg: Delivery) -> workers.StoredHeartbeat:
    return workers.StoredHeartbeat(msg.seq, msg.stored_at, msg.data)


JOBS = Projection(
    jobs.NAME,
    EVENT_STREAM,
    ALL_JOB_EVENTS,
    PROJECTOR_CONSUMER,
    "",
    StoredEvent.of,
    lambda: jobs.JobsProjection().apply_batch,
)
WORKERS = Projection(
    workers.NAME,
    WORKER_STREAM,
    WORKER_SUBJECTS,
    "fq-projector-workers",
    "-workers",
    _heartbeat,
    lambda: workers.apply_batch,
)


class Projector:
    """Runs the projections until stopped (or once, for a rebuild or replay)."""

    def __init__(
        self, settings: Settings, *, connect: Callable[[], Awaitable[EventLog]] | None = None
    ) -> None:
        """``connect``: where to get the log (default: connect to ``FQ_NATS_URL``; tests
        pass an in-memory log). The projector closes it when it is done."""
        self._settings = settings
        self._open_log = connect or self._connect_nats
        self._stopping = asyncio.Event()
        self.lost_lead = False
        """Set when the projector stopped because its lock was lost (exit non-zero)."""

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Follow the logs for ever (until stopped), as the leader of the read store."""
        engine = make_engine(self._settings.effective_database_url)
        init_schema(engine)
        lock = StoreLock(engine, "projector")
        try:
            if await self._lead(lock):
                event_log = await self._connect()
                watchdog = asyncio.create_task(self._watch(lock), name="lock-watchdog")
                try:
                    await asyncio.gather(
                        *(
                            self._follow(event_log, engine, p, self._consumer_name(p), None, None)
                            for p in (JOBS, WORKERS)
                        )
                    )
                finally:
                    watchdog.cancel()
                    await event_log.close()
        finally:
            lock.release()
            engine.dispose()

    async def catch_up(self, *, until: datetime | None = None, up_to: int | None = None) -> int:
        """One-shot: apply the event log up to its current end (or to sequence ``up_to``, or
        to ``until``, by the time JetStream stored each message) and return the position
        reached.

        ``fq projections rebuild`` and ``fq replay --until`` run this into a fresh store,
        ``fq projections verify`` into a scratch one.
        """
        engine = make_engine(self._settings.effective_database_url)
        init_schema(engine)
        lock = StoreLock(engine, "projector")
        try:
            if not lock.try_acquire():
                raise ConfigurationError(
                    "a projector is running on this read store; stop it, or rebuild into "
                    "another store (--database-url)"
                )
            event_log = await self._connect()
            try:
                last = up_to
                if last is None:
                    last = await event_log.last_seq(EVENT_STREAM)
                return await self._follow(
                    event_log, engine, JOBS, f"fq-rebuild-{new_job_id()}", last, until
                )
            finally:
                await event_log.close()
        finally:
            lock.release()
            engine.dispose()

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
        await ensure_streams(event_log, self._settings)
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

    async def _follow(
        self,
        event_log: EventLog,
        engine: Engine,
        projection: Projection,
        consumer: str,
        last_seq: int | None,
        until: datetime | None,
    ) -> int:
        """Apply ``projection`` from its checkpoint on: for ever (``last_seq`` None), or up
        to ``last_seq`` / ``until`` on a temporary consumer (one-shot runs). A lost delivery
        or a moved checkpoint is counted, and the projection resumes from the stored
        checkpoint."""
        failures = 0
        while True:
            try:
                return await self._follow_from_checkpoint(
                    event_log, engine, projection, consumer, last_seq, until
                )
            except (_LostDeliveries, CheckpointMoved) as exc:
                counter = (
                    "lost_deliveries" if isinstance(exc, _LostDeliveries) else "checkpoint_moves"
                )
                problem = f"{exc}; resuming from the stored checkpoint"
                await asyncio.to_thread(
                    health.record, engine, projection.name, problem, utcnow(), **{counter: 1}
                )
                pause = STANDBY_RETRY if isinstance(exc, CheckpointMoved) else 0.0
            except ConfigurationError:
                raise  # the store and the log disagree: an operator must act
            except Exception as exc:
                if last_seq is not None:
                    raise  # a one-shot run reports its failure
                # The live projector outlives a NATS failover (a request that timed out, a
                # connection cut under a pull): its position is in the store, so it resumes
                # from there instead of stopping one projection while the other goes on.
                failures += 1
                pause = RESTART.delay(failures, random.random())
                log.warning(
                    "%s projection failed (%r); resuming from the stored checkpoint in %.1f s",
                    projection.name,
                    exc,
                    pause,
                    exc_info=not isinstance(exc, FerrisQueueError | TimeoutError),
                )
            if pause:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)
            if self._stopping.is_set():
                return await asyncio.to_thread(_position, engine, projection)

    async def _follow_from_checkpoint(
        self,
        event_log: EventLog,
        engine: Engine,
        projection: Projection,
        consumer: str,
        last_seq: int | None,
        until: datetime | None,
    ) -> int:
        position = await asyncio.to_thread(_position, engine, projection)
        one_shot = last_seq is not None
        if last_seq is not None and position >= last_seq:
            return position
        stream_end = await event_log.last_seq(projection.stream)
        if position > stream_end:
            # New events would reuse sequences the store has already applied, and be skipped.
            raise ConfigurationError(
                f"the read store has applied {projection.stream} up to sequence {position}, "
                f"but the stream ends at {stream_end}: the log lost its tail (a power loss "
                "without fsync?) or the store belongs to another log. Rebuild it: "
                "fq projections rebuild --database-url <new store>"
            )
        puller = await self._puller(event_log, projection, consumer, position, temporary=one_shot)
        log.info("%s projection resuming after sequence %d", projection.name, position)
        done = asyncio.Event() if one_shot else self._stopping
        batch_size = self._settings.projector_batch
        apply = projection.applier()

        async def request_size() -> int:
            return batch_size

        async def first_stored(seq: int) -> int | None:
            found = await event_log.read(projection.stream, projection.subjects, from_seq=seq)
            return None if found is None else found.seq

        # Receiving (and decoding) the next bursts overlaps with applying this one in the
        # database thread; bursts that piled up meanwhile are applied in one transaction.
        received: asyncio.Queue[tuple[Delivery, list[Any]] | None] = asyncio.Queue(PIPELINE_DEPTH)

        async def receive() -> None:
            try:
                async for msgs in puller.bursts(done, request_size=request_size):
                    await received.put((msgs[-1], [projection.decode(m) for m in msgs]))
            finally:
                await received.put(None)

        receiver = asyncio.create_task(receive(), name=f"receive:{projection.name}")
        try:
            while True:
                item = await received.get()
                if item is None:  # the receiver ended: re-raise why, if it failed
                    await receiver
                    break
                last_msg, batch = item
                while len(batch) < batch_size and not received.empty():
                    more = received.get_nowait()
                    if more is None:
                        received.put_nowait(None)  # seen again by the outer loop
                        break
                    last_msg, batch = more[0], batch + more[1]
                wanted = [entry for entry in batch if _within(entry, last_seq, until)]
                applicable, lost = await contiguous(position, wanted, first_stored)
                if applicable:
                    position = await asyncio.to_thread(_apply, engine, apply, position, applicable)
                if lost is not None:  # acknowledge nothing past what was applied
                    raise _LostDeliveries(lost)
                await last_msg.ack()  # the consumer acks all: one ack covers every burst
                if last_seq is not None and (len(wanted) < len(batch) or position >= last_seq):
                    done.set()
                    break
        finally:
            receiver.cancel()
            # Its failure, if any, was raised above (or matters less than the one raised).
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver
            await puller.stop()
            if one_shot:
                await event_log.delete_consumer(projection.stream, consumer)
        return position

    async def _puller(
        self,
        event_log: EventLog,
        projection: Projection,
        name: str,
        position: int,
        *,
        temporary: bool,
    ) -> Consumer:
        config: dict[str, Any] = {
            **load_consumer_definition(projection.stream, projection.definition),
            "durable_name": name,
        }
        if position > 0:
            config.update(deliver_policy="by_start_sequence", opt_start_seq=position + 1)
        if temporary:  # removed by the server if a one-shot run dies before deleting it
            config["inactive_threshold"] = 60 * 1_000_000_000
        # The start position cannot be changed on an existing consumer: re-create it.
        await event_log.delete_consumer(projection.stream, name)
        await event_log.ensure_consumer(projection.stream, config)
        puller = event_log.consumer(
            projection.stream,
            name,
            expires=FETCH_TIMEOUT,
            linger=BURST_LINGER,
            give_up_after=UNANSWERED_LIMIT,
        )
        await puller.start()
        return puller


def _within(item: Any, last_seq: int | None, until: datetime | None) -> bool:
    return (last_seq is None or item.seq <= last_seq) and (until is None or item.stored_at <= until)


def _apply(engine: Engine, apply: ApplyBatch, after: int, batch: Sequence[Any]) -> int:
    with Session(engine) as session:
        return apply(session, batch, after=after)


def _position(engine: Engine, projection: Projection) -> int:
    with Session(engine) as session:
        return queries.checkpoint(session, projection.name)
