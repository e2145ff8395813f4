"""The consume loop: one :class:`QueueLoop` per queue, pulling from its durable consumer as
the worker's slots free up.

Concurrency is one ``asyncio.Semaphore`` per worker process, shared by its queues: a pull
request asks for as many messages as there are free slots, so a worker never holds (and lets
expire) more jobs than it can run. A request keeps the slots it was not sent until it ends
(at the latest when it expires, see :data:`PULLING`): with several queues, a job may wait up
to that long for slots an idle queue's request holds.

Each queue's loop is a :class:`~ferrisqueue.log.service_loop.ServiceLoop` (the scheduler's
and the projector's loops have the same shape). One life ensures the queue's consumer and
pulls until the worker stops, handing each delivered message to the executor in a task of
its own. A life that fails (the consumer cannot be created or was deleted, the connection
fails under a pull) is logged with the queue and consumer, and the next life begins after
the loops' capped backoff (1 s, doubling, up to 30 s; cut short by a stop): the other
queues, the running jobs, the heartbeat and the lease keeper go on meanwhile. A job's own
failures, poison included, are the executor's (:mod:`worker.executor`), never the loop's.

Stopping: no new pull requests; messages that arrived but were not handed over are nak'd at
once; running jobs get ``shutdown_grace`` seconds to finish, then are handed back with
``nak`` (redelivered at once, not after AckWait).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Iterable

from ferrisqueue.domain.backoff import RetryPolicy
from ferrisqueue.domain.events import EventKind
from ferrisqueue.domain.queuecontrol import CONTROL_STREAM
from ferrisqueue.domain.subjects import (
    DEFAULT_PRIORITY,
    EVENT_STREAM,
    job_subject,
    lane_notices,
    parse_job_subject,
)
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.port import Consumer, Delivery, Pulling
from ferrisqueue.log.ratelimits import KV_STREAM as RATELIMITS_STREAM
from ferrisqueue.log.service_loop import RESTART, ServiceLoop
from ferrisqueue.log.topology import prepare_consumer, prepare_streams, worker_consumer_config
from ferrisqueue.runloop import reap
from ferrisqueue.settings import Settings
from worker.executor import JobExecutor
from worker.heartbeat import HeartbeatPublisher
from worker.lanes import IDLE_WAIT, WAYS, LaneArbiter
from worker.lease import LeaseKeeper
from worker.limits import Admission
from worker.middleware import Middleware, MiddlewareStack
from worker.pause import QueueGates
from worker.registry import TaskRegistry

log = logging.getLogger(__name__)

MAX_FETCH = 256
PULLING = Pulling(expires=0.25, give_up_after=30.0)
"""When no lane has work, a pull request waits 0.25 s on the default lane (also how quickly
a stop, or work in another lane, is noticed by an idle worker); a worker takes each job the
moment it arrives (no linger). After 30 s of pull requests nobody answers (a long election, or a
consumer someone deleted) the queue's loop starts a new life, which re-creates its
consumers."""
LANE_PULLING = Pulling(expires=0.25, no_wait=True, give_up_after=30.0)
"""Otherwise each lane is asked only for what it holds now (see :mod:`worker.lanes`)."""


class QueueLoop(ServiceLoop):
    """One queue's consumption (see the module's notes): each life ensures the queue's
    durable consumer and pulls from it until ``stopping``, passing every delivered message
    to ``hand_over``. ``take_slots`` says how many messages to ask for next (it waits for a
    free slot); ``give_back`` gets back the slots a pull request did not fill."""

    def __init__(
        self,
        event_log: EventLog,
        queue: str,
        settings: Settings,
        *,
        take_slots: Callable[[], Awaitable[int]],
        give_back: Callable[[int], None],
        hand_over: Callable[[Delivery], None],
        restart: RetryPolicy = RESTART,
        draw: Callable[[], float] = random.random,
        gates: QueueGates | None = None,
    ) -> None:
        super().__init__(restart=restart, draw=draw)
        self.queue = queue
        self._gates = gates
        self._settings = settings
        self.consumer: str = worker_consumer_config(queue, settings)["durable_name"]
        self.name = f"queue {queue} (consumer {self.consumer})"
        self._log = event_log
        self._take_slots = take_slots
        self._give_back = give_back
        self._hand_over = hand_over
        self.lanes = LaneArbiter(self._request_size, give_back)
        """Which lane's consumer the next pull request goes to (:mod:`worker.lanes`)."""

    async def serve(self, stopping: asyncio.Event) -> None:
        pullers: dict[int, Consumer] = {}
        try:
            for way in WAYS:
                lane = DEFAULT_PRIORITY if way == IDLE_WAIT else way
                config = worker_consumer_config(self.queue, self._settings, lane)
                if way != IDLE_WAIT:
                    await prepare_consumer(self._log, EVENT_STREAM, config)
                pulling = PULLING if way == IDLE_WAIT else LANE_PULLING
                puller = self._log.consumer(EVENT_STREAM, config["durable_name"], pulling)
                await puller.start()
                pullers[way] = puller
            self.lanes.reset()
            log.info("%s: pulling", self.name)
            self.serving()
            # One lane's failure ends this life for all of them, by their own stop (a lane
            # cancelled while it waits for slots could not give them back).
            ending = asyncio.Event()
            relay = asyncio.create_task(_on_stop(stopping, ending))
            try:
                ended = await asyncio.gather(
                    *(self._pull(lane, puller, ending) for lane, puller in pullers.items()),
                    return_exceptions=True,
                )
            finally:
                await reap(relay)
            for failure in ended:
                if isinstance(failure, BaseException):
                    raise failure
        finally:
            for puller in pullers.values():
                await _hand_back(puller)

    async def _pull(self, lane: int, puller: Consumer, ending: asyncio.Event) -> None:
        """Pull one lane until ``ending``; its failure sets ``ending`` for the others."""
        try:
            bursts = puller.bursts(
                ending,
                request_size=functools.partial(self.lanes.take, lane),
                unused=functools.partial(self.lanes.unused, lane),
            )
            async for burst in bursts:
                self.lanes.delivered(lane, burst)
                for msg in burst:
                    self._hand_over(msg)
        finally:
            ending.set()

    async def _request_size(self) -> int:
        """Slots for the next pull request, once the queue is not paused: a paused queue
        sends no pull request at all (see :mod:`worker.pause`)."""
        if self._gates is None:
            return await self._take_slots()
        while True:
            await self._gates.open_for(self.queue)
            slots = await self._take_slots()
            if not self._gates.paused(self.queue):
                return slots
            self._give_back(slots)  # paused while we waited for slots


async def _on_stop(stopping: asyncio.Event, ending: asyncio.Event) -> None:
    await stopping.wait()
    ending.set()


async def _hand_back(puller: Consumer) -> None:
    """Stop pulling and nak what arrived but was never handed over, so that another worker
    gets it at once (a connection that is gone redelivers it after AckWait instead)."""
    try:
        for msg in await puller.stop():
            await msg.nak()
    except Exception as exc:
        log.debug("could not hand back unstarted jobs: %r", exc)


class Worker:
    """One worker process's jobs, across its queues; ``middleware`` (outermost first) runs
    around every attempt and opens the worker's resources (:mod:`worker.middleware`);
    ``restart`` is the backoff between a queue loop's failed lives."""

    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        middleware: Iterable[Middleware] = (),
        *,
        restart: RetryPolicy = RESTART,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._middleware = MiddlewareStack(middleware)
        self._restart = restart
        self._slots = asyncio.Semaphore(settings.worker_concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._event_log: EventLog | None = None
        self.gates: QueueGates | None = None
        """The pause state of the worker's queues, once :meth:`serve` has begun."""
        self.gates_ready = asyncio.Event()
        """Set once :attr:`gates` has read the queues' states (a test signal)."""
        self.loops: dict[str, QueueLoop] = {}
        """Each queue's loop, by queue, once :meth:`serve` has begun (tests await their
        ``signals``)."""

    def stop(self) -> None:
        """Ask the worker to stop (safe from a signal handler)."""
        self._stopping.set()

    def health(self) -> str | None:
        """None while every queue's loop pulls and the log is reachable, else what is
        wrong (the metrics port's ``/healthz``)."""
        if self._event_log is None:
            return "not connected to NATS yet"
        if not self._event_log.connected:
            return "the NATS connection is closed"
        down = [queue for queue, loop in self.loops.items() if not loop.up]
        if down or not self.loops:
            return f"queue loops not running: {', '.join(down) or 'none started'}"
        return None

    async def run(self) -> None:
        """Start the middleware (opening the worker's resources), connect to NATS, consume
        until :meth:`stop`, wind down, and stop the middleware (closing them)."""
        async with self._middleware.running(self._settings):
            nats_log = await NatsLog.connect(
                self._settings, name=f"fq-worker:{self._settings.worker_id}"
            )
            try:
                await self.serve(nats_log)
            finally:
                await nats_log.close()

    async def serve(self, event_log: EventLog) -> None:
        """Consume from ``event_log`` until :meth:`stop`, then wind down (the log stays open:
        the caller owns it)."""
        settings = self._settings
        self._event_log = event_log
        leases = LeaseKeeper()
        keeping = asyncio.create_task(leases.run(), name="leases")
        gating: asyncio.Task[None] | None = None
        renewing: asyncio.Task[None] | None = None
        try:
            gates = self.gates = QueueGates(event_log, settings.worker_queues)
            admission = Admission(event_log, gates.limits)
            executor = JobExecutor(
                event_log,
                self._registry,
                worker_id=settings.worker_id,
                policies=functools.cache(settings.policy),  # settings are fixed at start
                leases=leases,
                middleware=self._middleware,
                admission=admission,
            )
            renewing = asyncio.create_task(admission.run(), name="slot leases")
            self.loops = {
                queue: QueueLoop(
                    event_log,
                    queue,
                    settings,
                    take_slots=self._take_slots,
                    give_back=self._give_back,
                    hand_over=functools.partial(self._start, executor),
                    restart=self._restart,
                    gates=gates,
                )
                for queue in settings.worker_queues
            }
            await prepare_streams(
                event_log, settings, (EVENT_STREAM, CONTROL_STREAM, RATELIMITS_STREAM)
            )
            # Before any loop pulls: a worker started while its queue is paused stays paused.
            await gates.load()
            self.gates_ready.set()
            gating = asyncio.create_task(gates.run(self._stopping), name="queue gates")
            await self._listen_for_cancels(event_log, executor)
            await self._listen_for_lanes(event_log)
            heartbeat = HeartbeatPublisher(
                event_log,
                settings,
                lambda: (len(self._running), executor.processed, executor.failed),
            )
            beating = asyncio.create_task(heartbeat.run(self._stopping), name="heartbeat")
            log.info(
                "worker %s consuming %s with %d slots, tasks: %s",
                settings.worker_id,
                ", ".join(settings.worker_queues),
                settings.worker_concurrency,
                ", ".join(self._registry.names),
            )
            # A loop raises nothing but a cancellation: one queue's trouble stays its own.
            async with asyncio.TaskGroup() as loops:
                for loop in self.loops.values():
                    loops.create_task(loop.run(self._stopping), name=loop.name)
            await self._wind_down()
            await beating
            await heartbeat.beat("stopped")
        finally:
            await reap(keeping)
            if gating is not None:
                await reap(gating)
            if renewing is not None:
                await reap(renewing)

    async def _listen_for_cancels(self, event_log: EventLog, executor: JobExecutor) -> None:
        """Cancel a running handler as soon as its job's ``cancel_requested`` is stored.

        Plain NATS delivery of the stored events: if one is missed (a disconnect), the job
        simply finishes; cancellation of a running job is cooperative, never guaranteed.
        A job that has not started yet is protected by the guarded ``started`` instead.
        """

        async def requested(subject: str, _data: bytes) -> None:
            with contextlib.suppress(ValueError):
                if executor.cancel(parse_job_subject(subject).job_id):
                    log.info("canceling %s on request", subject)

        for queue in self._settings.worker_queues:
            await event_log.watch(job_subject(queue, "*", EventKind.CANCEL_REQUESTED), requested)

    async def _listen_for_lanes(self, event_log: EventLog) -> None:
        """Tell a queue's lanes when work is published to one of them (best effort, like
        the cancels: a missed notice is made up by the lane's next probe)."""
        for queue, loop in self.loops.items():

            async def published(
                subject: str, _data: bytes, lanes: LaneArbiter = loop.lanes
            ) -> None:
                lanes.notice(subject)

            for subject in lane_notices(queue):
                await event_log.watch(subject, published)

    def _start(self, executor: JobExecutor, msg: Delivery) -> None:
        """Run one delivered job in a task of its own, on the slot it was pulled for."""
        task = asyncio.create_task(executor.execute(msg))
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _give_back(self, slots: int) -> None:
        for _ in range(slots):
            self._slots.release()

    async def _take_slots(self) -> int:
        """Wait for one free slot, then take every other free one (up to MAX_FETCH)."""
        await self._slots.acquire()
        taken = 1
        while taken < MAX_FETCH and not self._slots.locked():
            await self._slots.acquire()
            taken += 1
        return taken

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _wind_down(self) -> None:
        if not self._running:
            return
        log.info(
            "stopping: waiting up to %.1fs for %d running jobs",
            self._settings.shutdown_grace,
            len(self._running),
        )
        _, late = await asyncio.wait(self._running, timeout=self._settings.shutdown_grace)
        for task in late:
            task.cancel()  # the executor hands the job back with nak
        if late:
            await asyncio.wait(late)
