"""The metrics' parts, fast: the metrics port's answers, the queue depth sampled from the
consumers' backlogs, the worker's middleware and health, and the projector's counters and
lag, on the in-memory log."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from ferrisqueue.domain.events import Started, Succeeded, utcnow
from ferrisqueue.domain.subjects import ALL_JOB_EVENTS, EVENT_STREAM, LANES
from ferrisqueue.log.embedded import free_port
from ferrisqueue.log.memlog import MemoryLog
from ferrisqueue.log.port import PULLING
from ferrisqueue.log.topology import worker_consumer_name
from ferrisqueue.observability.registry import exposition, new_registry
from ferrisqueue.observability.server import MetricsServer, metrics_port
from ferrisqueue.settings import Settings
from projections.observe import ProjectorMetrics, lag
from projections.runner import Projector
from scheduler.depth import QueueDepth
from tests.support.memory import WAIT, memory_log, memory_settings, submit, wait_for_kinds
from tests.support.scrape import Scrape
from worker.metrics import WorkerMetrics
from worker.registry import TaskRegistry
from worker.runner import Worker
from worker.tasks import basic

pytestmark = pytest.mark.timeout(10)


def scraped(registry: CollectorRegistry) -> Scrape:
    return Scrape.parse(exposition(registry).decode())


async def test_the_metrics_port_serves_metrics_and_a_health_that_can_fail() -> None:
    registry = new_registry()
    problem: list[str] = []
    server = MetricsServer(registry, lambda: problem[0] if problem else None)
    async with server.serving("127.0.0.1", 0) as listening:
        port = listening.sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            metrics = await http.get("/metrics")
            healthy = await http.get("/healthz")
            problem.append("queue loops not running: default")
            sick = await http.get("/healthz")
            missing = await http.get("/elsewhere")
            posted = await http.post("/metrics")

    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=")
    assert Scrape.parse(metrics.text).value("process_cpu_seconds_total") > 0
    assert (healthy.status_code, healthy.text) == (200, "ok\n")
    assert (sick.status_code, sick.text) == (503, "queue loops not running: default\n")
    assert (missing.status_code, posted.status_code) == (404, 405)


async def test_no_port_is_opened_without_a_port_or_with_metrics_disabled() -> None:
    port = free_port()
    for settings in (
        memory_settings(),
        memory_settings(metrics_port=port, metrics_enabled=False),
    ):
        async with metrics_port(new_registry(), lambda: None, settings):
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)


async def test_queue_depth_reports_each_queues_waiting_and_active_jobs() -> None:
    log = await memory_log(memory_settings(worker_queues=["default", "mail"]))
    for _ in range(3):
        await submit(log)
    await submit(log, queue="mail")
    puller = log.consumer(EVENT_STREAM, worker_consumer_name("default"), PULLING)
    await puller.start()
    stopping = asyncio.Event()
    async for burst in puller.bursts(stopping, request_size=lambda: _one()):
        assert len(burst) == 1  # one job taken, not acked: active
        break
    registry = CollectorRegistry()
    depth = QueueDepth(registry)

    await depth.sample(log)
    first = scraped(registry)
    for lane in LANES:  # every lane's consumer of the queue is gone
        await log.delete_consumer(EVENT_STREAM, worker_consumer_name("mail", lane))
    await depth.sample(log)
    second = scraped(registry)

    assert first.value("fq_queue_depth", queue="default", state="waiting") == 2
    assert first.value("fq_queue_depth", queue="default", state="active") == 1
    assert first.value("fq_queue_depth", queue="mail", state="waiting") == 1
    assert not any(dict(labels).get("queue") == "mail" for _, labels in second.samples)
    await puller.stop()


async def _one() -> int:
    return 1


async def test_the_worker_counts_its_attempts_and_is_unhealthy_without_its_log() -> None:
    log = await memory_log()
    settings = memory_settings()
    registry = CollectorRegistry()
    tasks = TaskRegistry()
    basic.register(tasks)
    connection = log.connect()
    worker = Worker(settings, tasks, [WorkerMetrics(registry, settings)])
    assert worker.health() == "not connected to NATS yet"
    serving = asyncio.create_task(worker.serve(connection))
    await log.wait_until(lambda: worker.health() is None, timeout=WAIT)

    done = [await submit(log), await submit(log), await submit(log, "fail")]
    for job in done[:2]:
        await wait_for_kinds(log, job, "succeeded")
    await wait_for_kinds(log, done[2], "failed")
    await log.wait_until(
        lambda: (
            scraped(registry).value(
                "fq_job_attempts_total", queue="default", type="fail", outcome="failed"
            )
            == 1
        ),
        timeout=WAIT,
    )
    after = scraped(registry)
    connection.kill()

    assert (
        after.value("fq_job_attempts_total", queue="default", type="echo", outcome="succeeded") == 2
    )
    assert after.value("fq_worker_busy_slots") == 0
    assert after.value("fq_worker_slots") == settings.worker_concurrency
    assert worker.health() == "the NATS connection is closed"
    worker.stop()
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return memory_settings(database_url=f"sqlite:///{tmp_path / 'read.db'}")


async def test_the_projector_counts_committed_jobs_and_reports_its_lag(
    settings: Settings, store: Engine
) -> None:
    log = await memory_log()
    job = await submit(log)
    await log.append(Started(job_id=job, queue="default", at=utcnow(), attempt=1, worker="w"))
    await log.append(
        Succeeded(job_id=job, queue="default", at=utcnow(), attempt=1, duration_ms=250.0)
    )
    registry = CollectorRegistry()
    connection = log.connect()

    async def connect() -> MemoryLog:
        return connection

    projector = Projector(settings, connect=connect, metrics=ProjectorMetrics(registry))
    running = asyncio.create_task(projector.run())

    def finished() -> float:
        return scraped(registry).value(
            "fq_jobs_finished_total", queue="default", type="echo", outcome="succeeded"
        )

    await log.wait_until(lambda: finished() == 1, timeout=WAIT)
    await log.wait_until(lambda: projector.health() is None, timeout=WAIT)
    counted = scraped(registry)
    projector.stop()
    await running

    assert counted.value("fq_jobs_submitted_total", queue="default", type="echo") == 1
    assert counted.value("fq_job_wait_seconds_count", queue="default", type="echo") == 1
    assert counted.value("fq_job_run_seconds_count", queue="default", type="echo") == 1
    assert counted.value("fq_job_run_seconds_sum", queue="default", type="echo") == 0.25
    assert counted.value("fq_job_run_seconds_bucket", queue="default", type="echo", le="0.1") == 0


async def test_lag_counts_what_the_projection_has_not_applied_and_how_old_it_is() -> None:
    log = await memory_log()
    await submit(log)
    second = await submit(log)
    loop = SimpleNamespace(position=1, stream=EVENT_STREAM, subjects=ALL_JOB_EVENTS)
    stored = (await log.history(second))[0].stored_at

    behind = await lag(log, loop, stored + timedelta(seconds=7))  # type: ignore[arg-type]
    loop.position = 2
    caught_up = await lag(log, loop, stored + timedelta(seconds=7))  # type: ignore[arg-type]

    assert behind == (1, 7.0)
    assert caught_up == (0, 0.0)


def test_fq_up_gives_each_child_its_own_metrics_port_or_none() -> None:
    from ferrisqueue.cli.up import services

    def ports(**overrides: object) -> dict[str, str | None]:
        settings = memory_settings(workers=2, dashboard=False, **overrides)
        return {s.name: s.env.get("FQ_METRICS_PORT") for s in services(settings, "nats://x")}

    assert ports(metrics_port=9100) == {
        "projector": "9100",
        "gateway": None,  # serves /metrics on its own port
        "scheduler": "9101",
        "worker-1": "9102",
        "worker-2": "9103",
    }
    assert set(ports().values()) == {None}
