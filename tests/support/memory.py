"""Running FerrisQueue's services in-process on the in-memory log (dramatiq's StubBroker
habit): a log with the shipped topology, a worker that can be stopped or killed, waits on
the log's own changes, and a job's history as event names."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from ferrisqueue.domain.backoff import RetryPolicy
from ferrisqueue.domain.events import Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import EVENT_STREAM, job_history_filter
from ferrisqueue.log.memlog import MemoryLog
from ferrisqueue.log.service_loop import RESTART, ServiceLoop
from ferrisqueue.log.topology import ensure_topology
from ferrisqueue.settings import Settings
from worker.registry import TaskRegistry
from worker.runner import Worker

WAIT = 3.0
"""Seconds a test waits for the log to reach a state; in-memory runs take milliseconds."""


def memory_settings(**overrides: Any) -> Settings:
    """Settings of an in-memory run: one queue, AckWait 30 s (of the log's clock)."""
    fields: dict[str, Any] = {
        "worker_queues": ["default"],
        "worker_concurrency": 4,
        "worker_heartbeat": 60.0,
        "ack_wait": 30.0,
        "shutdown_grace": 1.0,
        "max_attempts": 3,
        **overrides,
    }
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


async def memory_log(settings: Settings | None = None) -> MemoryLog:
    """A fresh in-memory log with the streams and dispatch consumers `fq init` creates."""
    log = MemoryLog()
    await ensure_topology(log, settings or memory_settings())
    return log


def kinds(log: MemoryLog, job_id: str) -> list[str]:
    """The job's events, by kind, in log order."""
    return [
        m.subject.rsplit(".", 1)[-1] for m in log.messages(EVENT_STREAM, job_history_filter(job_id))
    ]


async def wait_for_kinds(log: MemoryLog, job_id: str, *wanted: str) -> list[str]:
    """Wait until the job's history holds ``wanted`` (in that order, among others)."""

    def holds() -> bool:
        found = iter(kinds(log, job_id))
        return all(kind in found for kind in wanted)

    await log.wait_until(holds, timeout=WAIT)
    return kinds(log, job_id)


async def submit(
    log: MemoryLog, type_: str = "echo", *, queue: str = "default", **fields: Any
) -> str:
    job_id = new_job_id()
    await log.append(Submitted(job_id=job_id, queue=queue, at=utcnow(), type=type_, **fields))
    return job_id


class RunningWorker:
    """A worker process on its own connection to the log, until stopped or killed."""

    def __init__(
        self,
        log: MemoryLog,
        registry: TaskRegistry,
        settings: Settings,
        restart: RetryPolicy = RESTART,
    ) -> None:
        self.connection = log.connect()
        self.worker = Worker(settings, registry, restart=restart)
        self._task = asyncio.create_task(self.worker.serve(self.connection), name="worker")

    async def stop(self) -> None:
        """A graceful stop (SIGTERM)."""
        self.worker.stop()
        await self._task

    async def kill(self) -> None:
        """``kill -9``: the connection is cut first, so nothing the process does after it
        reaches the log (its nak on the way out included)."""
        self.connection.kill()
        self.worker.stop()  # so its heartbeat loop ends too: the process is gone
        self._task.cancel()
        for job in list(self.worker._running):  # the handlers die with the process
            job.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        await asyncio.gather(*self.worker._running, return_exceptions=True)


L = TypeVar("L", bound=ServiceLoop)


@contextlib.asynccontextmanager
async def serving(service_loop: L) -> AsyncIterator[L]:
    """``service_loop`` started and taking items until the block ends, then stopped."""
    service_loop.start()
    await service_loop.signals.serving.reached(1, timeout=WAIT)
    try:
        yield service_loop
    finally:
        await service_loop.stop()


@contextlib.asynccontextmanager
async def running_worker(
    log: MemoryLog,
    registry: TaskRegistry,
    settings: Settings | None = None,
    *,
    restart: RetryPolicy = RESTART,
) -> Any:
    """A worker on ``log`` until the block ends (then stopped, unless it was killed);
    ``restart``: the backoff between its queue loops' failed lives."""
    worker = RunningWorker(log, registry, settings or memory_settings(), restart)
    try:
        yield worker
    finally:
        if worker.connection.alive:
            await worker.stop()
