"""The worker's Prometheus metrics, kept by a middleware (:mod:`worker.middleware`).

``fq_job_attempts_total{queue,type,outcome}``
    Attempts this worker made, by how they ended: ``succeeded``, ``failed``, ``canceled``,
    or ``interrupted`` (the worker stopped or could not record the outcome; the job comes
    again). The only count of interrupted attempts: they never reach the log.
``fq_worker_busy_slots`` / ``fq_worker_slots``
    Attempts running now (between ``before_attempt`` and ``after_attempt``), and the
    worker's concurrency (``FQ_WORKER_CONCURRENCY``).
``fq_worker_queue_up{queue}``
    1 while the worker's loop for the queue pulls, else 0 (read at scrape time): "no healthy
    worker for a queue" is a queue with no 1 among every worker's series.
``fq_worker_queue_paused{queue}``
    1 while the worker holds the queue because it is paused (its loop sends no pull
    request; :mod:`worker.pause`), else 0.

What happened to *jobs* (submitted, finished, dead-lettered, wait and run times) is counted
once for the whole system by the projector (:mod:`projections.observe`), which sees every
event exactly once; a worker sees only its own attempts, some of them twice.

Cost per attempt: one counter increment and a gauge up and down (a lock each), no
allocation beyond the cached label children.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ferrisqueue.settings import Settings
from worker.context import JobContext
from worker.middleware import AttemptOutcome, Middleware
from worker.runner import Worker


class WorkerMetrics(Middleware):
    """Counts attempts and busy slots into ``registry``; outermost, so that it sees every
    attempt, also those a plugin's middleware refuses."""

    def __init__(self, registry: CollectorRegistry, settings: Settings) -> None:
        self.attempts = Counter(
            "fq_job_attempts",
            "Attempts this worker made, by queue, job type and how they ended.",
            ["queue", "type", "outcome"],
            registry=registry,
        )
        self.busy = Gauge(
            "fq_worker_busy_slots", "Attempts this worker is running now.", registry=registry
        )
        slots = Gauge(
            "fq_worker_slots",
            "Attempts this worker runs at once at most (FQ_WORKER_CONCURRENCY).",
            registry=registry,
        )
        slots.set(settings.worker_concurrency)

        self._counted: dict[tuple[str, str, str], Counter] = {}
        """The attempts counter's children, by labels (a label lookup takes a lock and
        builds a tuple: more than the increment itself)."""

    async def before_attempt(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        self.busy.inc()

    async def after_attempt(self, ctx: JobContext, outcome: AttemptOutcome) -> None:
        self.busy.dec()
        labels = (ctx.queue, ctx.type, outcome.status.value)
        counted = self._counted.get(labels)
        if counted is None:
            counted = self._counted[labels] = self.attempts.labels(*labels)
        counted.inc()


def watch_queues(registry: CollectorRegistry, worker: Worker, queues: list[str]) -> None:
    """``fq_worker_queue_up{queue}`` for each of ``queues``, read from ``worker``'s loops
    at scrape time (nothing per job)."""
    up = Gauge(
        "fq_worker_queue_up",
        "1 while this worker pulls from the queue, else 0.",
        ["queue"],
        registry=registry,
    )
    paused = Gauge(
        "fq_worker_queue_paused",
        "1 while this worker holds the queue because it is paused, else 0.",
        ["queue"],
        registry=registry,
    )
    for queue in queues:
        up.labels(queue).set_function(functools.partial(_pulling, worker, queue))
        paused.labels(queue).set_function(functools.partial(_holding, worker, queue))


def _pulling(worker: Worker, queue: str) -> float:
    loop = worker.loops.get(queue)
    return 1.0 if loop is not None and loop.up else 0.0


def _holding(worker: Worker, queue: str) -> float:
    return 1.0 if worker.gates is not None and worker.gates.holding(queue) else 0.0
