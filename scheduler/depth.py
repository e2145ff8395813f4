"""Queue depth for Prometheus, from the worker consumers' backlogs.

``fq_queue_depth{queue,state}``
    ``waiting``: runnable jobs no worker has taken yet (the queue consumer's
    ``num_pending``); ``active``: jobs delivered to a worker and not acked yet, running or
    leased (``num_ack_pending``). The same figures KEDA's JetStream scaler reads.

The scheduler reports them because it runs once beside the queues (not once per worker),
but the figures are facts of the log: several schedulers report the same values, so a
dashboard takes ``max by (queue, state)``. Sampled every :data:`DEPTH_INTERVAL` seconds
through the log port (one ``CONSUMER.LIST`` request for every queue), not per scrape.
Counts are of runnable *messages*: a job canceled while it waited is counted until a worker
takes and drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry, Gauge

from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.errors import FerrisQueueError
from ferrisqueue.log.port import LogPort
from ferrisqueue.log.topology import queue_of_consumer

log = logging.getLogger(__name__)

DEPTH_INTERVAL = 5.0
"""Seconds between two samples of the queues' backlogs."""


class QueueDepth:
    """Keeps ``fq_queue_depth`` in ``registry`` up to date (see the module's notes)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.depth = Gauge(
            "fq_queue_depth",
            "Jobs of a queue by state: waiting (not taken) or active (taken, not acked).",
            ["queue", "state"],
            registry=registry,
        )
        self._queues: set[str] = set()

    async def sample(self, event_log: LogPort) -> None:
        """One sample: every queue that has a worker consumer; queues whose consumer is gone
        are dropped."""
        backlogs = await event_log.backlogs(EVENT_STREAM)
        totals: dict[str, tuple[int, int]] = {}
        for name, backlog in backlogs.items():
            if (queue := queue_of_consumer(name)) is None:
                continue
            waiting, active = totals.get(queue, (0, 0))  # a queue's lanes add up
            totals[queue] = (waiting + backlog.pending, active + backlog.ack_pending)
        for queue, (waiting, active) in totals.items():
            self.depth.labels(queue, "waiting").set(waiting)
            self.depth.labels(queue, "active").set(active)
        seen = set(totals)
        for gone in self._queues - seen:
            for state in ("waiting", "active"):
                self.depth.remove(gone, state)
        self._queues = seen

    async def run(self, event_log: LogPort, stopping: asyncio.Event) -> None:
        """Sample until ``stopping``; a failed sample (NATS away) keeps the last values."""
        while not stopping.is_set():
            try:
                await self.sample(event_log)
            except FerrisQueueError as exc:
                log.debug("queue depth not sampled: %s", exc)
            with contextlib.suppress(TimeoutError):  # the next sample is due
                await asyncio.wait_for(stopping.wait(), DEPTH_INTERVAL)
