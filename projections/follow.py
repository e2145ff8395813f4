"""Following one stream into the read store: a projection's loop.

A :class:`ProjectionLoop` is a :class:`~ferrisqueue.log.service_loop.ServiceLoop` (the
scheduler's loops have the same shape): one *life* re-reads the projection's checkpoint
from the store, re-creates its consumer to deliver from checkpoint + 1, and applies bursts
until it is stopped. Its error policy:

* **a lost delivery** (:mod:`projections.contiguity`) or **a moved checkpoint** (another
  projector wrote the store; ``commit_at`` is fenced): counted in ``projection_health``
  (:mod:`projections.health`), then the next life begins at once (after a moment, for a
  moved checkpoint) from the stored checkpoint: nothing is skipped or applied twice;
* **a stalled consumer** (nothing delivered for :data:`STALL_LIMIT` seconds although the
  stream holds newer messages: seen once a consumer's replicas had all been restarted):
  counted like a lost delivery, then a new life re-creates the consumer;
* **a wedged life** (no progress at all for :data:`WEDGE_LIMIT` seconds although the stream
  holds newer messages: seen once on a 3-node cluster after the node serving the projector's
  connection was killed, with nothing logged): the life is cancelled and counted like a
  stalled consumer. A batch still committing in a thread then cannot apply anything twice:
  its commit is fenced by the checkpoint;
* **any other failure** of a live projection (a JetStream request that timed out in a
  failover, a connection cut under a pull, a consumer nobody serves for
  :data:`PULLING`'s ``give_up_after`` seconds): logged, and the next life begins after the loops'
  capped backoff, so one projection never stops while the other goes on;
* **a store ahead of its log** (:class:`ConfigurationError`) is fatal: an operator must
  rebuild the store. A one-shot run (rebuild, replay, verify) reports any failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.domain.events import utcnow
from ferrisqueue.domain.partition import Partition
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.domain.subjects import ALL_JOB_EVENTS, EVENT_STREAM
from ferrisqueue.domain.workers import WORKER_STREAM, WORKER_SUBJECTS
from ferrisqueue.errors import CheckpointMoved, ConfigurationError, NatsUnavailable
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.port import Consumer, Delivery, Pulling
from ferrisqueue.log.service_loop import Restart, ServiceLoop
from ferrisqueue.log.topology import PROJECTOR_CONSUMER, load_consumer_definition
from ferrisqueue.runloop import reap
from ferrisqueue.store import queries
from projections import health, jobs, workers
from projections.contiguity import Gap, contiguous

log = logging.getLogger(__name__)

PULLING = Pulling(expires=1.0, linger=0.05, give_up_after=10.0)
"""A burst waits 50 ms to fill up: a projector that keeps up (workers yield it the CPU, see
``FQ_WORKER_NICENESS``) otherwise writes a small transaction every few milliseconds, and a
transaction's fixed cost (its checkpoint, aggregates, commit, the hand-over to the database
thread) was a third of its CPU per job at 10 ms. After 10 s of unanswered pull requests
(the consumer lost its leader, or was deleted) the projection re-creates its consumer from
the stored checkpoint."""
PIPELINE_DEPTH = 4
"""Bursts received ahead of the one being applied."""
STALL_LIMIT = 15.0
"""Seconds without a delivery, while the stream holds newer messages, after which the
projection re-creates its consumer from the checkpoint."""
WEDGE_LIMIT = 45.0
"""Seconds without progress (no burst taken in, nothing applied) while the stream holds
newer messages, after which a life is cancelled and the next begins from the checkpoint."""
CHECKPOINT_MOVED_PAUSE = 1.0
"""Seconds before resuming after another projector moved the checkpoint."""
ONE_SHOT_FUTILE_LIVES = 4
"""Lives in a row that apply nothing after which a one-shot run (rebuild, replay, verify)
fails instead of re-creating its consumer again: it must end, one way or the other."""


Observer = Callable[[Sequence[Any]], None]
"""Told what a committed batch applied (for the jobs projection: ``(before, event, after)``
triples, :data:`projections.metrics.Applied`)."""


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
    applier: Callable[[Observer | None], ApplyBatch]
    """Makes the apply function of one run (which may keep state between its batches),
    telling the observer what each committed batch applied (if the projection has anything
    to tell). Both it and ``decode`` give and take items with ``seq`` and ``stored_at``."""


def _heartbeat(msg: Delivery) -> workers.StoredHeartbeat:
    return workers.StoredHeartbeat(msg.seq, msg.stored_at, msg.data)


def jobs_projection(partition: Partition) -> Projection:
    """The jobs projection, or one partition of it (:mod:`ferrisqueue.domain.partition`):
    its checkpoint and consumer are the partition's, and it decodes only its own jobs'
    events; the others are :class:`~projections.jobs.Passed` over by the checkpoint."""
    name = partition.checkpoint(jobs.NAME)
    shared = not partition.whole

    def decode(msg: Delivery) -> StoredEvent | jobs.Passed:
        if partition.owns_subject(msg.subject):
            return StoredEvent.of(msg)
        return jobs.Passed(msg.seq, msg.stored_at)

    return Projection(
        name,
        EVENT_STREAM,
        ALL_JOB_EVENTS,
        PROJECTOR_CONSUMER,
        partition.suffixed(""),
        StoredEvent.of if partition.whole else decode,
        lambda observe: (
            jobs.JobsProjection(on_commit=observe, name=name, shared=shared).apply_batch
        ),
    )


JOBS = jobs_projection(Partition())
WORKERS = Projection(
    workers.NAME,
    WORKER_STREAM,
    WORKER_SUBJECTS,
    "fq-projector-workers",
    "-workers",
    _heartbeat,
    lambda _observe: workers.apply_batch,
)


class _Stalled(Exception):
    """The consumer delivers nothing although the stream holds what the projection has not
    applied: re-create it from the checkpoint."""


class _LostDeliveries(Exception):
    """The consumer skipped messages the stream holds: resume from the checkpoint."""

    def __init__(self, gap: Gap) -> None:
        super().__init__(str(gap))
        self.gap = gap


class ProjectionLoop(ServiceLoop):
    """Applies one projection's stream to the read store (see the module's notes): for
    ever, or with ``last_seq`` / ``until`` once, on a temporary consumer."""

    fatal: tuple[type[Exception], ...] = (ConfigurationError,)

    def __init__(
        self,
        event_log: EventLog,
        engine: Engine,
        projection: Projection,
        consumer: str,
        *,
        batch_size: int,
        last_seq: int | None = None,
        until: datetime | None = None,
        stall_limit: float = STALL_LIMIT,
        wedge_limit: float = WEDGE_LIMIT,
        observe: Observer | None = None,
    ) -> None:
        """``observe``: told what each committed batch applied (the projector's metrics)."""
        super().__init__()
        self._observe = observe
        self._stall_limit = stall_limit
        self._wedge_limit = wedge_limit
        self._progress_at = 0.0
        """When the current life last took a burst in or started (the loop's clock)."""
        self.name = f"{projection.name} projection"
        self.projection = projection.name
        self.stream = projection.stream
        self.subjects = projection.subjects
        self._log = event_log
        self._engine = engine
        self._projection = projection
        self._consumer = consumer
        self._batch_size = batch_size
        self._last_seq = last_seq
        self._until = until
        self.one_shot = last_seq is not None
        if self.one_shot:
            self.fatal = (Exception,)  # a one-shot run reports its failure
        self.position = 0
        """The checkpoint this loop last applied up to."""
        self._futile: tuple[int, int] = (-1, 0)
        """A one-shot run's position when a life last restarted, and the restarts in a row
        from that same position."""

    async def serve(self, stopping: asyncio.Event) -> None:
        try:
            await self._watched(stopping)
        except (_LostDeliveries, _Stalled, CheckpointMoved) as exc:
            lost = not isinstance(exc, CheckpointMoved)
            problem = f"{exc}; resuming from the stored checkpoint"
            counter = "lost_deliveries" if lost else "checkpoint_moves"
            await asyncio.to_thread(
                health.record,
                self._engine,
                self._projection.name,
                problem,
                utcnow(),
                **{counter: 1},
            )
            if self.one_shot:
                self._give_up_if_futile(problem)
            raise Restart(problem, after=0.0 if lost else CHECKPOINT_MOVED_PAUSE) from exc
        if self.one_shot:
            stopping.set()  # done: the run ends here

    async def _watched(self, stopping: asyncio.Event) -> None:
        """:meth:`_follow`, cancelled as :class:`_Stalled` if it makes no progress for
        :data:`WEDGE_LIMIT` seconds while the stream holds what it has not applied."""
        clock = asyncio.get_running_loop().time
        self._progress_at = clock()
        life = asyncio.create_task(self._follow(stopping), name=f"life:{self.projection}")
        try:
            while True:
                done, _ = await asyncio.wait([life], timeout=self._wedge_limit / 4)
                if done:
                    return life.result()
                idle = clock() - self._progress_at
                if idle <= self._wedge_limit:
                    continue
                if await self._behind():
                    raise _Stalled(
                        f"no progress for {idle:.0f} s while {self.stream} holds sequences "
                        f"after {self.position}"
                    )
                self._progress_at = clock()  # caught up: a quiet stream is no wedge
        finally:
            await reap(life)

    async def _behind(self) -> bool:
        """Whether the stream holds a sequence this loop wants and has not applied (False
        when that cannot be read: the life fails by itself then)."""
        try:
            newest = await self._log.last_seq(self.stream)
        except NatsUnavailable:
            return False
        wanted = newest if self._last_seq is None else min(newest, self._last_seq)
        return wanted > self.position

    def _give_up_if_futile(self, problem: str) -> None:
        """Count a one-shot life that ends to start again; fail the run once
        :data:`ONE_SHOT_FUTILE_LIVES` in a row applied nothing (a restart never mends it)."""
        at, count = self._futile
        count = count + 1 if at == self.position else 1
        self._futile = (self.position, count)
        if count >= ONE_SHOT_FUTILE_LIVES:
            raise NatsUnavailable(
                f"{self.stream}: {count} consumers in a row delivered nothing applicable after "
                f"sequence {self.position} (last: {problem}); giving up"
            )

    async def _follow(self, stopping: asyncio.Event) -> None:
        """One life: from the stored checkpoint until ``stopping`` (or, once, until the
        last sequence or time wanted); :attr:`position` follows what it applied."""
        projection, event_log, engine = self._projection, self._log, self._engine
        last_seq, until = self._last_seq, self._until
        position = self.position = await asyncio.to_thread(_position, engine, projection)

        async def first_stored(seq: int) -> int | None:
            found = await event_log.read(projection.stream, projection.subjects, from_seq=seq)
            return None if found is None else found.seq

        if last_seq is not None:
            # Done, or nothing wanted is left in the stream (removed by a limit or a purge):
            # no consumer would ever deliver up to last_seq, and a one-shot run would wait on.
            following = None if position >= last_seq else await first_stored(position + 1)
            if following is None or following > last_seq:
                return
        stream_end = await event_log.last_seq(projection.stream)
        if position > stream_end:
            # New events would reuse sequences the store has already applied, and be skipped.
            raise ConfigurationError(
                f"the read store has applied {projection.stream} up to sequence {position}, "
                f"but the stream ends at {stream_end}: the log lost its tail (a power loss "
                "without fsync?) or the store belongs to another log. Rebuild it: "
                "fq projections rebuild --database-url <new store>"
            )
        puller = await self._puller(position)
        log.info("%s projection resuming after sequence %d", projection.name, position)
        self.serving()
        batch_size = self._batch_size
        apply = projection.applier(self._observe)
        clock = asyncio.get_running_loop().time
        last_delivery = clock()
        delivered_up_to = position  # the newest sequence received: applied, or in the pipeline

        async def request_size() -> int:
            nonlocal last_delivery
            if clock() - last_delivery > self._stall_limit:
                # Nothing delivered for a while: fine if the stream has nothing newer, a
                # consumer stuck after a failover (seen on a 3-node cluster) if it has.
                # Bursts still waiting for a slow store are delivered: not a stall.
                newest = await event_log.last_seq(projection.stream)
                wanted_up_to = newest if last_seq is None else min(newest, last_seq)
                if wanted_up_to > max(self.position, delivered_up_to):
                    raise _Stalled(
                        f"no delivery for {self._stall_limit:g} s while {projection.stream} holds "
                        f"sequences {self.position + 1}-{wanted_up_to}"
                    )
                last_delivery = clock()
            return batch_size

        # Receiving (and decoding) the next bursts overlaps with applying this one in the
        # database thread; bursts that piled up meanwhile are applied in one transaction.
        received: asyncio.Queue[tuple[Delivery, list[Any]] | None] = asyncio.Queue(PIPELINE_DEPTH)

        async def receive() -> None:
            nonlocal last_delivery, delivered_up_to
            try:
                async for msgs in puller.bursts(stopping, request_size=request_size):
                    delivered_up_to = max(delivered_up_to, *(m.seq for m in msgs))
                    await received.put((msgs[-1], [projection.decode(m) for m in msgs]))
                    # From when the receiver could pull again: waiting for a slow store to take
                    # this burst (the pipeline full) is not the consumer's silence.
                    last_delivery = clock()
            except asyncio.CancelledError:
                # Reaped: the applying loop has left and reads nothing more. Putting the end
                # marker into a full queue would wait for ever, and the loop's reap with it
                # (a projector stood still, silent, after a node serving it was killed).
                raise
            except BaseException:
                await received.put(None)  # the loop reads on to the marker, then re-raises
                raise
            await received.put(None)

        receiver = asyncio.create_task(receive(), name=f"receive:{projection.name}")
        try:
            while True:
                item = await received.get()
                self._progress_at = clock()
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
                    self.position = position  # read by request_size, and by one-shot callers
                if lost is not None:  # acknowledge nothing past what was applied
                    raise _LostDeliveries(lost)
                await last_msg.ack()  # the consumer acks all: one ack covers every burst
                self._progress_at = clock()
                if last_seq is not None and (len(wanted) < len(batch) or position >= last_seq):
                    break
        finally:
            await reap(receiver)
            await puller.stop()
            if self.one_shot:
                await event_log.delete_consumer(projection.stream, self._consumer)

    async def _puller(self, position: int) -> Consumer:
        """The consumer re-created to deliver from ``position`` + 1 (a start position
        cannot be changed on an existing consumer), and pulling from it."""
        stream, name = self._projection.stream, self._consumer
        config: dict[str, Any] = {
            **load_consumer_definition(stream, self._projection.definition),
            "durable_name": name,
        }
        if position > 0:
            config.update(deliver_policy="by_start_sequence", opt_start_seq=position + 1)
        if self.one_shot:  # removed by the server if a one-shot run dies before deleting it
            config["inactive_threshold"] = 60 * 1_000_000_000
        await self._log.delete_consumer(stream, name)
        await self._log.ensure_consumer(stream, config)
        puller = self._log.consumer(stream, name, PULLING)
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
