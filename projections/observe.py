"""The projector's Prometheus metrics: what happened to jobs, counted once for the system,
and how far the read store is behind the log.

The projector is where the job counters live because it is the one reader that sees every
event exactly once: a job submitted by a raw ``nats pub`` never passes the gateway, a
worker sees only its own attempts (and a redelivered one twice), but every ``submitted``
and every outcome reaches the projector, in order, and a batch is counted only once it is
committed (a batch that fails is applied again from the log, and counted then).

``fq_jobs_submitted_total{queue,type}``
    Jobs created (``submitted``, or ``scheduled`` to run later), whoever created them.
``fq_jobs_finished_total{queue,type,outcome}``
    Jobs that reached a final state: ``succeeded``, ``failed`` (after their last attempt, or
    a permanent error) or ``canceled``. A job redriven from the dead letters finishes again.
``fq_dead_letters_total{queue}``
    Jobs moved to the dead-letter stream (``dead_lettered``).
``fq_job_wait_seconds{queue,type}`` (histogram)
    From when a job became runnable (submitted, its delay or backoff over) to its
    ``started``.
``fq_job_run_seconds{queue,type}`` (histogram)
    Each attempt's handler time, as the worker measured it (``duration_ms`` of its
    ``succeeded`` or ``failed``).
``fq_projection_lag_events{projection}`` / ``fq_projection_lag_seconds{projection}``
    Messages the stream holds beyond the projection's checkpoint, and the age of the oldest
    of them (0 when caught up), sampled every :data:`LAG_INTERVAL` seconds by the leading
    projector (a standby reports none). A partition of the jobs projection reports its own
    (``projection="jobs/0of2"``).

The counters restart from 0 with the process (Prometheus' ``rate`` and ``increase`` handle
that); a rebuild into a fresh store would count the whole log again, but it runs in its own
process (``fq projections rebuild``), which serves no metrics.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ferrisqueue.domain.events import DeadLettered, Failed, JobSpec, Succeeded, utcnow
from ferrisqueue.domain.states import JobStatus
from ferrisqueue.errors import FerrisQueueError
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.observability.registry import DURATION_BUCKETS
from projections.follow import ProjectionLoop
from projections.metrics import Applied, wait_ms

log = logging.getLogger(__name__)

LAG_INTERVAL = 2.0
"""Seconds between two samples of the projections' lag."""

_OUTCOMES = {
    JobStatus.COMPLETED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELED: "canceled",
}


class ProjectorMetrics:
    """The projector's metrics in ``registry`` (see the module's notes)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        job = ["queue", "type"]
        self.submitted = Counter(
            "fq_jobs_submitted", "Jobs created, by whatever producer.", job, registry=registry
        )
        self.finished = Counter(
            "fq_jobs_finished",
            "Jobs that reached a final state, by outcome.",
            [*job, "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "fq_dead_letters", "Jobs moved to the dead letters.", ["queue"], registry=registry
        )
        self.wait = Histogram(
            "fq_job_wait_seconds",
            "From runnable to started.",
            job,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.run = Histogram(
            "fq_job_run_seconds",
            "One attempt's handler time.",
            job,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._waits: dict[tuple[str, str], Histogram] = {}
        self._runs: dict[tuple[str, str], Histogram] = {}
        self.lag_events = Gauge(
            "fq_projection_lag_events",
            "Messages beyond the projection's checkpoint.",
            ["projection"],
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "fq_projection_lag_seconds",
            "Age of the oldest message the projection has not applied (0: caught up).",
            ["projection"],
            registry=registry,
        )

    def committed(self, applied: Sequence[Applied]) -> None:
        """Count the events of a committed batch of the jobs projection (called in the
        database thread; prometheus_client's metrics are thread-safe). Counts are summed
        per batch first and the histograms' children cached: a label lookup takes a lock
        and builds a tuple, which per event would cost more than the counting."""
        counts: collections.Counter[tuple[Counter, tuple[str, ...]]] = collections.Counter()
        for before, event, after in applied:
            job = (after.queue, after.type)
            if isinstance(event, JobSpec):
                counts[self.submitted, job] += 1
            elif isinstance(event, DeadLettered):
                counts[self.dead_letters, (after.queue,)] += 1
            elif (wait := wait_ms(before, event)) is not None:
                _child(self._waits, self.wait, job).observe(wait / 1000)
            if isinstance(event, Succeeded | Failed) and event.duration_ms is not None:
                _child(self._runs, self.run, job).observe(event.duration_ms / 1000)
            outcome = _OUTCOMES.get(after.status)
            if outcome is not None and (before is None or not before.status.is_terminal):
                counts[self.finished, (*job, outcome)] += 1
        for (counter, labels), count in counts.items():
            counter.labels(*labels).inc(count)

    async def sample_lag(self, event_log: EventLog, loops: Sequence[ProjectionLoop]) -> None:
        """Sample each loop's lag every :data:`LAG_INTERVAL` seconds until cancelled; a
        sample that fails (NATS away) leaves the last values and is tried again."""
        while True:
            for loop in loops:
                with contextlib.suppress(FerrisQueueError):
                    events, seconds = await lag(event_log, loop, utcnow())
                    self.lag_events.labels(loop.projection).set(events)
                    self.lag_seconds.labels(loop.projection).set(seconds)
            await asyncio.sleep(LAG_INTERVAL)  # a sampling period, not a wait on a condition


def _child(
    cache: dict[tuple[str, str], Histogram], histogram: Histogram, job: tuple[str, str]
) -> Histogram:
    child = cache.get(job)
    if child is None:
        child = cache[job] = histogram.labels(*job)
    return child


async def lag(event_log: EventLog, loop: ProjectionLoop, now: datetime) -> tuple[int, float]:
    """Messages of ``loop``'s stream beyond its position, and the age at ``now`` of the
    first of them it follows; (0, 0.0) when it is caught up."""
    position = loop.position
    first = await event_log.read(loop.stream, loop.subjects, from_seq=position + 1)
    if first is None:
        return 0, 0.0
    last = await event_log.last_seq(loop.stream)
    return max(0, last - position), max(0.0, (now - first.stored_at).total_seconds())
