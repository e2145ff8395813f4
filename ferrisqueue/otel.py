"""The OpenTelemetry implementation of :class:`ferrisqueue.tracing.Tracing` (the ``[otel]``
extra). The only module that imports the OpenTelemetry SDK; imported by
:func:`ferrisqueue.tracing.tracing_from_env` only when tracing is switched on, so a process
without the extra never loads it.

Configured by the standard variables only: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``,
or any installed exporter's entry point name; several separated by commas),
``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER(_ARG)``,
``OTEL_EXPORTER_OTLP_*`` (read by the exporter itself) and ``OTEL_BSP_*`` (the batch span
processor). ``otlp`` is OTLP over HTTP/protobuf, unless ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or
``..._TRACES_PROTOCOL``) is ``grpc``, which needs ``opentelemetry-exporter-otlp-proto-grpc``.

Context travels as W3C ``traceparent`` / ``tracestate`` only (the trace-context propagator,
not ``OTEL_PROPAGATORS``): those are the two headers FerrisQueue passes on in the log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import entry_points

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ferrisqueue import __version__
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.tracing import Attributes, Span, SpanKind, Tracing, trace_headers

_PROPAGATOR = TraceContextTextMapPropagator()
_KINDS = {
    SpanKind.PRODUCER: trace.SpanKind.PRODUCER,
    SpanKind.CONSUMER: trace.SpanKind.CONSUMER,
    SpanKind.INTERNAL: trace.SpanKind.INTERNAL,
}
_EXPORTERS = "opentelemetry_traces_exporter"
"""The entry point group in which exporter packages register themselves."""


class OtelSpan(Span):
    """An OpenTelemetry span behind the :class:`~ferrisqueue.tracing.Span` interface."""

    def __init__(self, span: trace.Span, token: object | None) -> None:
        super().__init__()
        self._span = span
        self._token = token

    @property
    def headers(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier

    @property
    def trace_id(self) -> str | None:
        context = self._span.get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None

    def event(self, name: str, attributes: Attributes | None = None) -> None:
        self._span.add_event(name, dict(attributes) if attributes else None)

    def set(self, attributes: Attributes) -> None:
        self._span.set_attributes(dict(attributes))

    def fail(self, error: BaseException | str) -> None:
        if isinstance(error, BaseException):
            self._span.record_exception(error)
        self._span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))

    def end(self) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        self._span.end()


class OtelTracing(Tracing):
    """Spans recorded by an OpenTelemetry ``TracerProvider`` (a test passes its own, with an
    in-memory exporter; services get one from :func:`from_env`)."""

    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("ferrisqueue", __version__)

    def start(
        self,
        name: str,
        *,
        kind: SpanKind,
        parent: Mapping[str, str] | None = None,
        attributes: Attributes | None = None,
        current: bool = False,
    ) -> Span:
        context = None
        if parent and not trace.get_current_span().get_span_context().is_valid:
            context = _PROPAGATOR.extract(trace_headers(parent))
        span = self._tracer.start_span(
            name,
            context=context,
            kind=_KINDS[kind],
            attributes=dict(attributes) if attributes else None,
        )
        token = otel_context.attach(trace.set_span_in_context(span)) if current else None
        return OtelSpan(span, token)

    def current_trace_id(self) -> str | None:
        context = trace.get_current_span().get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None

    @property
    def tracer_provider(self) -> TracerProvider:
        return self._provider

    def shutdown(self) -> None:
        self._provider.shutdown()


def from_env(service: str, exporters: str) -> OtelTracing:
    """A provider for ``service`` exporting through each of ``exporters`` (the value of
    ``OTEL_TRACES_EXPORTER``), batched; the rest as the ``OTEL_*`` variables say."""
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": service}))
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    for name in (part.strip() for part in exporters.split(",")):
        if name and name != "none":
            provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    return OtelTracing(provider)


def _exporter(name: str) -> SpanExporter:
    if name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        name = "otlp_proto_grpc" if protocol.strip() == "grpc" else "otlp_proto_http"
    found = entry_points(group=_EXPORTERS, name=name)
    if not found:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER: no installed span exporter is called {name!r}"
        )
    exporter: SpanExporter = next(iter(found)).load()()
    return exporter
