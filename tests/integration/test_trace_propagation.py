"""W3C trace context reaches the log from every producer, with or without OpenTelemetry: the
``fq submit`` CLI (through the gateway or straight to NATS) passes on ``$TRACEPARENT``, a raw
``nats pub`` with a ``traceparent`` header has it carried by the worker's events, and with
tracing on a cron tick starts a trace whose context its job carries."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ferrisqueue.domain.cron import CronSpec
from ferrisqueue.domain.events import utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.cronbook import CronBook
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.otel import OtelTracing
from ferrisqueue.settings import Settings
from scheduler.cron import Outcome, Tick, TickRelay
from tests.conftest import StartService
from tests.support.procs import FQ, service_env
from tests.support.waits import collect_events

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def headers_of(nc: Client, job_id: str, kind: str) -> dict[str, str]:
    message = await nc.jetstream().get_last_msg(EVENT_STREAM, f"fq.job.default.{job_id}.{kind}")
    return dict(message.headers or {})


def untraced_env(settings: Settings, **extra: str) -> dict[str, str]:
    """A service's environment without any OTEL_* variable: tracing stays off."""
    env = {k: v for k, v in service_env(settings).items() if not k.startswith("OTEL_")}
    return env | extra


async def submit_with_traceparent(
    settings: Settings, nc: Client, cwd: Path, *options: str
) -> dict[str, str]:
    """Run ``fq submit echo OPTIONS`` with $TRACEPARENT / $TRACESTATE set, tracing off; the
    headers of the job's ``submitted`` event."""
    env = untraced_env(settings, TRACEPARENT=PARENT, TRACESTATE="vendor=1")
    done = await asyncio.to_thread(
        subprocess.run,
        [FQ, "submit", "echo", *options],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return await headers_of(nc, done.stdout.strip(), "submitted")


async def test_fq_submit_nats_passes_TRACEPARENT_on_to_the_submitted_event(
    settings: Settings, event_log: EventLog, nc: Client, tmp_path: Path
) -> None:
    headers = await submit_with_traceparent(settings, nc, tmp_path, "--nats")

    assert (headers["traceparent"], headers["tracestate"]) == (PARENT, "vendor=1")


async def test_fq_submit_through_the_gateway_passes_TRACEPARENT_on_too(
    gateway: httpx.AsyncClient, settings: Settings, nc: Client, tmp_path: Path
) -> None:
    headers = await submit_with_traceparent(settings, nc, tmp_path)

    assert (headers["traceparent"], headers["tracestate"]) == (PARENT, "vendor=1")


async def test_a_raw_nats_pub_with_a_traceparent_keeps_it_on_the_jobs_events(
    start: StartService, event_log: EventLog, nc: Client
) -> None:
    start("worker")
    job_id = new_job_id()
    await nc.publish(
        f"fq.job.default.{job_id}.submitted",
        json.dumps({"type": "echo", "payload": {}}).encode(),
        headers={"traceparent": PARENT, "Nats-Msg-Id": f"{job_id}:submitted"},
    )

    await collect_events(nc, f"fq.job.*.{job_id}.succeeded", until=bool, timeout=20)

    for kind in ("started", "succeeded"):
        assert (await headers_of(nc, job_id, kind))["traceparent"] == PARENT


async def test_a_cron_tick_starts_a_trace_that_its_job_carries(
    settings: Settings, event_log: EventLog, nc: Client
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    relay = TickRelay.for_settings(event_log, settings, tracing=OtelTracing(provider))
    await CronBook.for_settings(event_log, settings).put(
        CronSpec.model_validate(
            {"name": "nightly", "schedule": "@every 1h", "job": {"type": "echo"}}
        ),
        actor="cli:tester@test-host",
    )
    tick = Tick("nightly", seq=42, fired_at=utcnow())

    assert await relay.create_job(tick) is Outcome.CREATED

    (span,) = exporter.get_finished_spans()
    assert span.name == "fq submit echo"
    assert span.attributes is not None and span.attributes["fq.schedule"] == "nightly"
    assert span.parent is None and span.context is not None  # a trace of its own
    headers = await headers_of(nc, tick.job_id, "submitted")
    _version, trace_id, span_id, _flags = headers["traceparent"].split("-")
    assert (trace_id, span_id) == (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
    provider.shutdown()


async def test_the_gateway_without_tracing_passes_the_callers_traceparent_on(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    answer = await gateway.post("/jobs", json={"type": "echo"}, headers={"traceparent": PARENT})

    assert answer.status_code == 202
    assert (await headers_of(nc, answer.json()["job_id"], "submitted"))["traceparent"] == PARENT
