"""Prometheus metrics from every service, end to end: real processes, real scrapes, parsed
with prometheus_client's parser; every counter moves by exactly what the jobs did."""

from __future__ import annotations

import uuid

import httpx
import pytest

from ferrisqueue.domain.events import Submitted, utcnow
from ferrisqueue.log.embedded import free_port
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from tests.conftest import StartService
from tests.support.promql import alert_expressions, dashboard_expressions, metric_names
from tests.support.scrape import Scrape, moved, scrape
from tests.support.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _healthy(url: str) -> int:
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            return (await client.get(url)).status_code
        except httpx.TransportError:
            return 0


async def start_scraped(start: StartService, settings: Settings) -> dict[str, str]:
    """The projector, the scheduler and one worker, each with its metrics port, once their
    ``/healthz`` answers 200; returns each one's base URL."""
    ports = {name: free_port() for name in ("projector", "scheduler", "worker")}
    start("projections", FQ_METRICS_PORT=str(ports["projector"]))
    start("scheduler", FQ_METRICS_PORT=str(ports["scheduler"]))
    start(
        "worker",
        FQ_WORKER_ID="w-metrics",
        FQ_RETRY_BASE="0.1",
        FQ_RETRY_JITTER="0",
        FQ_METRICS_PORT=str(ports["worker"]),
    )
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    for name, url in urls.items():
        await wait_until(
            lambda url=url: _healthy(f"{url}/healthz"),  # type: ignore[misc]
            lambda code: code == 200,
            timeout=20,
            what=f"{name} /healthz",
        )
    return urls


async def scrape_all(urls: dict[str, str]) -> dict[str, Scrape]:
    return {name: await scrape(f"{url}/metrics") for name, url in urls.items()}


async def test_every_service_counts_exactly_what_the_jobs_did(
    gateway: httpx.AsyncClient, start: StartService, settings: Settings, event_log: EventLog
) -> None:
    urls = {**await start_scraped(start, settings), "gateway": str(settings.gateway_url)}
    before = await scrape_all(urls)

    # Through the API: 6 that succeed, 2 that fail for good, 2 that fail once then succeed.
    for job_type, count, payload in (("echo", 6, {}), ("fail", 2, {}), ("flaky", 2, {})):
        for _ in range(count):
            answer = await gateway.post("/jobs", json={"type": job_type, "payload": payload})
            assert answer.status_code == 202, answer.text
    # One more as a plain producer would (no gateway): only the projector can count it.
    await event_log.append(
        Submitted(job_id=str(uuid.uuid4()), queue="default", at=utcnow(), type="echo")
    )

    def finished(s: Scrape, job_type: str, outcome: str) -> float:
        labels = {"queue": "default", "type": job_type, "outcome": outcome}
        return moved(before["projector"], s, "fq_jobs_finished_total", **labels)

    await wait_until(
        lambda: scrape(f"{urls['projector']}/metrics"),
        lambda s: (
            finished(s, "echo", "succeeded") >= 7
            and finished(s, "fail", "failed") >= 2
            and finished(s, "flaky", "succeeded") >= 2
            and s.value("fq_projection_lag_events", projection="jobs") == 0
        ),
        timeout=30,
        what="the projector to count 11 finished jobs",
    )
    await wait_until(  # sampled every few seconds: the queue is empty once it says so
        lambda: scrape(f"{urls['scheduler']}/metrics"),
        lambda s: (
            ("fq_queue_depth", frozenset({("queue", "default"), ("state", "waiting")})) in s.samples
            and s.value("fq_queue_depth", queue="default", state="waiting") == 0
            and s.value("fq_queue_depth", queue="default", state="active") == 0
        ),
        timeout=30,
        what="the scheduler to see the default queue drained",
    )
    after = await scrape_all(urls)

    q = ("queue", "default")
    expected = {
        # The projector: every job once, the plain producer's included.
        ("projector", "fq_jobs_submitted_total", (q, ("type", "echo"))): 7,
        ("projector", "fq_jobs_submitted_total", (q, ("type", "fail"))): 2,
        ("projector", "fq_jobs_submitted_total", (q, ("type", "flaky"))): 2,
        ("projector", "fq_jobs_finished_total", (q, ("type", "echo"), ("outcome", "succeeded"))): 7,
        ("projector", "fq_jobs_finished_total", (q, ("type", "fail"), ("outcome", "failed"))): 2,
        (
            "projector",
            "fq_jobs_finished_total",
            (q, ("type", "flaky"), ("outcome", "succeeded")),
        ): 2,
        # a retried attempt's failure does not finish the job
        ("projector", "fq_jobs_finished_total", (q, ("type", "flaky"), ("outcome", "failed"))): 0,
        ("projector", "fq_dead_letters_total", (q,)): 2,
        ("projector", "fq_job_wait_seconds_count", (q, ("type", "echo"))): 7,
        ("projector", "fq_job_wait_seconds_count", (q, ("type", "fail"))): 2,
        ("projector", "fq_job_wait_seconds_count", (q, ("type", "flaky"))): 4,  # with retries
        ("projector", "fq_job_run_seconds_count", (q, ("type", "echo"))): 7,
        ("projector", "fq_job_run_seconds_count", (q, ("type", "fail"))): 2,
        ("projector", "fq_job_run_seconds_count", (q, ("type", "flaky"))): 4,
        # The worker: its attempts.
        ("worker", "fq_job_attempts_total", (q, ("type", "echo"), ("outcome", "succeeded"))): 7,
        ("worker", "fq_job_attempts_total", (q, ("type", "fail"), ("outcome", "failed"))): 2,
        ("worker", "fq_job_attempts_total", (q, ("type", "flaky"), ("outcome", "failed"))): 2,
        ("worker", "fq_job_attempts_total", (q, ("type", "flaky"), ("outcome", "succeeded"))): 2,
        # The gateway: the API's submissions, not the plain producer's.
        (
            "gateway",
            "fq_http_requests_total",
            (("route", "/jobs"), ("method", "POST"), ("status", "202")),
        ): 10,
        (
            "gateway",
            "fq_http_request_duration_seconds_count",
            (("route", "/jobs"), ("method", "POST")),
        ): 10,
    }
    got = {
        (service, name, labels): moved(before[service], after[service], name, **dict(labels))
        for service, name, labels in expected
    }
    assert got == expected
    assert after["projector"].value("fq_projection_lag_seconds", projection="jobs") == 0
    assert after["worker"].value("fq_worker_busy_slots") == 0
    assert after["worker"].value("fq_worker_slots") == settings.worker_concurrency
    assert after["worker"].value("fq_worker_queue_up", queue="default") == 1
    assert after["worker"].value("fq_worker_queue_paused", queue="default") == 0

    for name, scraped in after.items():  # process metrics from prometheus_client's collectors
        assert scraped.value("process_cpu_seconds_total") > 0, name
        assert "python_info" in scraped.families, name


async def test_gateway_counts_requests_by_route_template_not_raw_path(
    gateway: httpx.AsyncClient, settings: Settings
) -> None:
    url = f"{settings.gateway_url}/metrics"
    before = await scrape(url)
    for _ in range(3):
        assert (await gateway.get(f"/jobs/{uuid.uuid4()}/status")).status_code == 404
    assert (await gateway.get("/no/such/route")).status_code == 404
    after = await scrape(url)

    template = {"route": "/jobs/{job_id}/status", "method": "GET", "status": "404"}
    assert moved(before, after, "fq_http_requests_total", **template) == 3
    assert (
        moved(
            before, after, "fq_http_requests_total", route="unmatched", method="GET", status="404"
        )
        == 1
    )
    assert not any(
        "/jobs/" in dict(labels).get("route", "") and "{" not in dict(labels)["route"]
        for _, labels in after.samples
    )  # no series per job id
    json_stats = await gateway.get("/stats/throughput")  # the dashboard's JSON moved here
    assert json_stats.status_code == 200 and "totals" in json_stats.json()


async def test_a_worker_without_nats_reports_unhealthy(
    start: StartService, settings: Settings
) -> None:
    port = free_port()
    start(
        "worker",
        FQ_NATS_URL="nats://127.0.0.1:1",
        FQ_METRICS_PORT=str(port),
        FQ_NATS_CONNECT_TIMEOUT="0.5",
    )
    code = await wait_until(
        lambda: _healthy(f"http://127.0.0.1:{port}/healthz"),
        lambda code: code != 0,
        timeout=20,
        what="the worker's metrics port",
    )
    assert code == 503


async def test_every_metric_the_board_and_the_alerts_use_exists_in_a_real_scrape(
    gateway: httpx.AsyncClient, start: StartService, settings: Settings
) -> None:
    urls = {**await start_scraped(start, settings), "gateway": str(settings.gateway_url)}
    for job_type in ("echo", "fail", "flaky"):  # a success, a dead letter, a retry
        answer = await gateway.post("/jobs", json={"type": job_type})
        assert answer.status_code == 202, answer.text
    await wait_until(
        lambda: scrape(f"{urls['projector']}/metrics"),
        lambda s: (
            s.value("fq_jobs_finished_total", queue="default", type="flaky", outcome="succeeded")
            == 1
        ),
        timeout=30,
        what="the flaky job to succeed on its retry",
    )
    await wait_until(
        lambda: scrape(f"{urls['scheduler']}/metrics"),
        lambda s: "fq_queue_depth" in s.names(),
        timeout=30,
        what="a queue depth sample",
    )
    scraped = await scrape_all(urls)
    served = set().union(*(s.names() for s in scraped.values()))

    used = {
        (source, name)
        for source, expressions in (
            ("board", dashboard_expressions()),
            ("alerts", alert_expressions()),
        )
        for expr in expressions
        for name in metric_names(expr)
    }
    assert used, "no expressions found"
    missing = sorted((source, name) for source, name in used if name not in served)
    assert missing == []
