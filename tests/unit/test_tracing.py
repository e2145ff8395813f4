"""The tracing interface: the no-op passes a well-formed trace context through unchanged;
the OpenTelemetry implementation continues it (or the current span), puts its own context
on what follows, and is chosen only by the standard OTEL_* variables."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind as OtelKind
from opentelemetry.trace import StatusCode

from ferrisqueue.errors import ConfigurationError
from ferrisqueue.otel import OtelTracing
from ferrisqueue.tracing import NO_TRACING, SpanKind, trace_headers, trace_id_of, tracing_from_env

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"traceparent": PARENT}, {"traceparent": PARENT}),
        (
            {"traceparent": PARENT, "tracestate": "a=1", "Nats-Msg-Id": "x"},
            {"traceparent": PARENT, "tracestate": "a=1"},
        ),
        ({"traceparent": PARENT, "tracestate": ""}, {"traceparent": PARENT}),
        ({"traceparent": "00-xyz", "tracestate": "a=1"}, {}),
        ({"tracestate": "a=1"}, {}),
        (None, {}),
    ],
)
def test_trace_headers_keep_only_a_well_formed_w3c_context(
    headers: dict[str, str] | None, expected: dict[str, str]
) -> None:
    assert trace_headers(headers) == expected


def test_the_trace_id_is_read_from_the_traceparent() -> None:
    assert trace_id_of({"traceparent": PARENT}) == TRACE_ID
    assert trace_id_of({"traceparent": "garbage"}) is None


def test_without_opentelemetry_a_span_passes_the_incoming_context_through() -> None:
    with NO_TRACING.span(
        "fq submit echo", kind=SpanKind.PRODUCER, parent={"traceparent": PARENT}
    ) as span:
        assert span.headers == {"traceparent": PARENT}
        assert span.trace_id == TRACE_ID
    assert NO_TRACING.start("x", kind=SpanKind.PRODUCER).headers == {}
    assert not NO_TRACING.enabled


@pytest.fixture
def spans() -> tuple[OtelTracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OtelTracing(provider), exporter


def test_a_span_continues_the_context_in_headers_and_hands_on_its_own(
    spans: tuple[OtelTracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    with tracing.span("outer", kind=SpanKind.CONSUMER, parent={"traceparent": PARENT}) as span:
        handed_on = span.headers
        # Inside, the current span wins over any headers.
        with tracing.span("inner", kind=SpanKind.PRODUCER, parent={"traceparent": PARENT}):
            assert tracing.current_trace_id() == TRACE_ID
    assert tracing.current_trace_id() is None

    inner, outer = exporter.get_finished_spans()
    assert outer.context is not None and inner.context is not None
    assert outer.context.trace_id == inner.context.trace_id == int(TRACE_ID, 16)
    assert outer.parent is not None and outer.parent.span_id == 0x00F067AA0BA902B7
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert (outer.kind, inner.kind) == (OtelKind.CONSUMER, OtelKind.PRODUCER)
    assert handed_on["traceparent"] == f"00-{TRACE_ID}-{outer.context.span_id:016x}-01"


def test_an_exception_leaving_a_span_fails_it(
    spans: tuple[OtelTracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    with pytest.raises(RuntimeError), tracing.span("boom", kind=SpanKind.INTERNAL):
        raise RuntimeError("no")

    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ],
)
def test_tracing_is_switched_on_by_the_standard_variables_only(
    environ: dict[str, str], enabled: bool
) -> None:
    tracing = tracing_from_env("test", environ)
    try:
        assert tracing.enabled is enabled
    finally:
        tracing.shutdown()


def test_an_exporter_that_is_not_installed_is_refused_at_start() -> None:
    with pytest.raises(ConfigurationError, match="no_such_exporter"):
        tracing_from_env("test", {"OTEL_TRACES_EXPORTER": "no_such_exporter"})
