"""The consume loop: pull from each queue's durable consumer as slots free up.

Concurrency is one ``asyncio.Semaphore`` per worker process: a pull request asks for as
many messages as there are free slots, so a worker never holds (and lets expire) more jobs than it
can run. Stopping: no new pull requests; running jobs get ``shutdown_grace`` seconds to finish,
then are handed back with ``nak`` (redelivered at once, not after AckWait).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterable

from ferrisqueue.domain.events import EventKind
from ferrisqueue.domain.subjects import EVENT_STREAM, job_subject, parse_job_subject
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.port import Consumer, Pulling
from ferrisqueue.log.topology import ensure_streams, worker_consumer_config
from ferrisqueue.runloop import reap
from ferrisqueue.settings import Settings
from worker.executor import JobExecutor
from worker.heartbeat import HeartbeatPublisher
from worker.lease import LeaseKeeper
from worker.middleware import Middleware, MiddlewareStack
from worker.registry import TaskRegistry

log = logging.getLogger(__name__)

MAX_FETCH = 256
PULLING = Pulling(expires=1.0)
"""A pull request waits 1 s for work (also how quickly a stop is noticed); a worker takes
each job the moment it arrives (no linger) and keeps asking when nobody answers (an
election): it has nothing else to do."""


class Worker:
    """One worker process's jobs, across its queues; ``middleware`` (outermost first) runs
    around every attempt and opens the worker's resources (:mod:`worker.middleware`)."""

    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        middleware: Iterable[Middleware] = (),
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._middleware = MiddlewareStack(middleware)
        self._slots = asyncio.Semaphore(settings.worker_concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask the worker to stop (safe from a signal handler)."""
        self._stopping.set()

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
        leases = LeaseKeeper()
        keeping = asyncio.create_task(leases.run(), name="leases")
        try:
            executor = JobExecutor(
                event_log,
                self._registry,
                worker_id=settings.worker_id,
                policies=functools.cache(settings.policy),  # settings are fixed at start
                leases=leases,
                middleware=self._middleware,
            )
            pullers = await self._pullers(event_log)
            await self._listen_for_cancels(event_log, executor)
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
            await asyncio.gather(*(self._consume(puller, executor) for puller in pullers))
            await self._wind_down()
            await beating
            await heartbeat.beat("stopped")
        finally:
            await reap(keeping)

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

    async def _pullers(self, event_log: EventLog) -> list[Consumer]:
        await ensure_streams(event_log, self._settings)
        pullers = []
        for queue in self._settings.worker_queues:
            config = worker_consumer_config(queue, self._settings)
            await event_log.ensure_consumer(EVENT_STREAM, config)
            puller = event_log.consumer(EVENT_STREAM, config["durable_name"], PULLING)
            await puller.start()
            pullers.append(puller)
        return pullers

    async def _consume(self, puller: Consumer, executor: JobExecutor) -> None:
        bursts = puller.bursts(
            self._stopping, request_size=self._take_slots, unused=self._give_back
        )
        async for burst in bursts:
            for msg in burst:
                task = asyncio.create_task(executor.execute(msg))
                self._running.add(task)
                task.add_done_callback(self._finished)
        for msg in await puller.stop():
            await msg.nak()  # arrived as we stopped: hand it back at once

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
