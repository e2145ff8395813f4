"""One trace follows a job from its submit to its outcome, through a retry, on a real
nats-server: the gateway (under a real uvicorn), a worker and the scheduler's timer relay run
in this process so that their spans can be collected in memory (the SDK's
InMemorySpanExporter); everything between them goes through JetStream, as in production."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from nats.aio.client import Client
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.otel import OtelTracing
from ferrisqueue.settings import Settings
from gateway.app import create_app
from scheduler.timers import TimerRelay
from tests.support.waits import collect_events, wait_until
from worker.logfields import AttemptLogFields
from worker.runner import Worker
from worker.tasks import default_registry
from worker.tracing import TraceAttempts

pytestmark = pytest.mark.integration


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Iterator[OtelTracing]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield OtelTracing(provider)
    provider.shutdown()


@pytest.fixture
async def services(
    settings: Settings, event_log: EventLog, tracing: OtelTracing
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway under uvicorn, a worker and the timer relay, all traced by ``tracing``;
    an HTTP client of the gateway."""
    config = uvicorn.Config(
        create_app(settings, tracing=tracing),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(), name="gateway")
    worker = Worker(
        settings,
        default_registry(settings),
        [TraceAttempts(tracing), AttemptLogFields(tracing)],
    )
    working = asyncio.create_task(worker.run(), name="worker")
    relay = TimerRelay(event_log, tracing=tracing)
    relay.start()
    try:
        async with httpx.AsyncClient(base_url=str(settings.gateway_url), timeout=10) as client:

            async def ready() -> int:
                try:
                    return (await client.get("/readyz")).status_code
                except httpx.TransportError:
                    return 0

            await wait_until(ready, lambda code: code == 200, timeout=20, what="gateway /readyz")
            await relay.signals.serving.reached(1, timeout=10)
            yield client
    finally:
        await relay.stop()
        worker.stop()
        server.should_exit = True
        await asyncio.gather(working, serving)


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    (found,) = [s for s in spans if s.name == name]
    return found


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def fq_events(span: ReadableSpan) -> list[str]:
    return [e.name for e in span.events if e.name != "exception"]


async def test_a_job_retried_once_is_one_trace_from_submit_to_success(
    services: httpx.AsyncClient, exporter: InMemorySpanExporter, nc: Client
) -> None:
    caller_trace = "0af7651916cd43dd8448eb211c80319c"
    answer = await services.post(
        "/jobs",
        json={
            "type": "flaky",
            "payload": {"failures": 1},
            "retry": {"base": 0.2, "cap": 0.2, "jitter": 0},
        },
        headers={"traceparent": f"00-{caller_trace}-b7ad6b7169203331-01"},
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]

    history = await collect_events(
        nc, f"fq.job.*.{job_id}.*", until=lambda e: e[-1:] and e[-1]["_subject"].endswith(
            ".succeeded"
        ), timeout=20
    )  # fmt: skip

    async def attempt_spans() -> list[ReadableSpan]:
        return [s for s in exporter.get_finished_spans() if s.name == "fq attempt flaky"]

    # An attempt's span ends after its outcome is stored and acked.
    attempts = await wait_until(
        attempt_spans, lambda found: len(found) == 2, timeout=10, what="both attempt spans"
    )

    assert [e["_subject"].rsplit(".", 1)[-1] for e in history] == [
        "submitted", "started", "failed", "released", "started", "succeeded"
    ]  # fmt: skip
    spans = list(exporter.get_finished_spans())
    submit = one(spans, "fq submit flaky")
    timer = one(spans, "fq timer")
    first, second = sorted(
        attempts, key=lambda s: s.attributes["fq.attempt"] if s.attributes else 0
    )

    # One trace: the caller's, continued by the gateway's request span.
    trace_id, submit_id = ids(submit)
    assert f"{trace_id:032x}" == caller_trace
    others = {s.name for s in spans if ids(s)[0] != trace_id}
    assert others <= {"GET /readyz"}  # the fixture's readiness probes: traces of their own
    request = one(spans, "POST /jobs")
    assert request.kind is SpanKind.SERVER
    assert parent_id(submit) == ids(request)[1]
    assert submit.kind is SpanKind.PRODUCER
    assert submit.attributes is not None and submit.attributes["fq.job_id"] == job_id

    # Both attempts are children of the submit; the retry's timer too.
    for attempt, number in ((first, 1), (second, 2)):
        assert attempt.kind is SpanKind.CONSUMER
        assert parent_id(attempt) == submit_id
        assert attempt.attributes is not None
        assert (attempt.attributes["fq.job_id"], attempt.attributes["fq.attempt"]) == (
            job_id, number
        )  # fmt: skip
    assert fq_events(first) == ["started", "failed"]
    assert first.status.status_code is StatusCode.ERROR
    assert fq_events(second) == ["started", "succeeded"]
    assert second.attributes is not None and second.attributes["fq.outcome"] == "succeeded"
    assert parent_id(timer) == submit_id
    assert timer.attributes is not None
    assert (timer.attributes["fq.attempt"], timer.attributes["fq.waiting"]) == (1, "retrying")

    # In time order: submit, attempt 1, its retry's timer, attempt 2.
    starts = [s.start_time or 0 for s in (submit, first, timer, second)]
    assert starts == sorted(starts)

    # The log carries the submit's context on every event, the released one included.
    js = nc.jetstream()
    released = await js.get_last_msg(EVENT_STREAM, f"fq.job.default.{job_id}.released")
    assert released.headers is not None
    assert released.headers["traceparent"] == f"00-{trace_id:032x}-{submit_id:016x}-01"
