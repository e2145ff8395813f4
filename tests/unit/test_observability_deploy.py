"""The observability deployment files hang together: the PromQL tokenizer the scrape test
relies on, the alert rules and the board parse, Prometheus scrapes the services
docker-compose.yml runs, on the ports they serve, and prometheus-nats-exporter reads
nats-1's monitoring port with ``-jsz=all``. (That every metric they name exists in a real
scrape is checked in tests/integration/test_metrics.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.promql import ROOT, alert_expressions, dashboard_expressions, metric_names

yaml = pytest.importorskip("yaml")


def load(path: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / path).read_text())
    return data


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum by (queue) (rate(fq_jobs_finished_total[5m]))", {"fq_jobs_finished_total"}),
        (
            'histogram_quantile(0.95, sum by (le, route) (rate(x_bucket{a="b(c)"}[5m])))',
            {"x_bucket"},
        ),
        ('max by (queue) (a{s="w"}) > 0 unless on (queue) (sum by (queue) (b) > 0)', {"a", "b"}),
        ("a / ignoring(x) b and c offset 5m", {"a", "b", "c"}),
    ],
)
def test_the_tokenizer_finds_metric_names_and_nothing_else(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_board_covers_what_the_issue_asks_for() -> None:
    names = set().union(*map(metric_names, dashboard_expressions()))
    for wanted in (
        "fq_jobs_finished_total",
        "fq_job_wait_seconds_bucket",
        "fq_job_run_seconds_bucket",
        "fq_queue_depth",
        "fq_dead_letters_total",
        "fq_projection_lag_seconds",
        "fq_worker_busy_slots",
    ):
        assert wanted in names


def test_there_are_four_alerts_with_expressions() -> None:
    assert len(alert_expressions()) == 4
    assert all(metric_names(expr) for expr in alert_expressions())


def test_prometheus_scrapes_every_service_compose_runs_on_its_metrics_port() -> None:
    compose = load("docker-compose.yml")["services"]
    config = load("deploy/prometheus/prometheus.yml")
    targets = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.split(":")
                targets[host] = int(port)
        for dns in job.get("dns_sd_configs", []):
            for name in dns["names"]:
                targets[name] = dns["port"]
    assert targets == {
        "gateway": int(compose["gateway"]["environment"]["FQ_GATEWAY_PORT"]),
        "projector": 9100,
        "scheduler": 9100,
        "worker": 9100,
        "nats-1": 7777,  # the exporter, in nats-1's network namespace
    }
    for name in ("projector", "scheduler", "worker"):
        assert compose[name]["environment"]["FQ_METRICS_PORT"] == "9100"
        assert compose[name]["environment"]["FQ_METRICS_HOST"] == "0.0.0.0"
    mounted = " ".join(compose["prometheus"]["volumes"])
    assert (
        "deploy/prometheus/prometheus.yml" in mounted and "deploy/prometheus/alerts.yml" in mounted
    )


def test_the_nats_exporter_reads_jetstream_from_nats_1() -> None:
    """Over nats-1's loopback: the monitoring port listens nowhere else."""
    exporter = load("docker-compose.yml")["services"]["nats-exporter"]
    assert exporter["image"].startswith("natsio/prometheus-nats-exporter")
    assert "-jsz=all" in exporter["command"]
    assert exporter["network_mode"] == "service:nats-1"
    assert exporter["command"][-1] == "http://127.0.0.1:8222"
    assert "7777" in exporter["command"]
