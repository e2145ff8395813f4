"""Tracing behind a tiny interface: W3C trace context in message headers, spans when the
``[otel]`` extra is installed and switched on.

A job's trace context travels *in the log*: the producer (the gateway, ``fq submit``, cron,
or any ``nats pub -H traceparent:...``) puts W3C ``traceparent`` (and ``tracestate``) on the
job's creation event; every event a worker appends for the job carries the same two headers,
and the scheduler's timers copy them, so the ``released`` of a delay or a retry carries them
too. The worker starts each attempt's span as a child of that context. This passing on is
plain header copying (:func:`trace_headers`), done with or without OpenTelemetry.

:class:`Tracing` is the interface the services use, and itself the no-op: spans cost nothing,
and the context that came in (an HTTP request's or a message's ``traceparent``) is what goes
out. :func:`tracing_from_env` returns the OpenTelemetry implementation
(:mod:`ferrisqueue.otel`, the one module that imports the SDK) when the SDK is installed and
``OTEL_TRACES_EXPORTER`` (or an OTLP endpoint) is set; otherwise this no-op. Nothing is
configured at import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")

Attributes = Mapping[str, str | int | float | bool]


def trace_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The W3C trace context in ``headers``: ``traceparent`` (when well-formed, else nothing)
    and ``tracestate`` with it. What is passed on from a message to the events that follow."""
    if not headers:
        return {}
    parent = headers.get(TRACEPARENT)
    if parent is None or _TRACEPARENT.match(parent) is None:
        return {}
    state = headers.get(TRACESTATE)
    return {TRACEPARENT: parent} if not state else {TRACEPARENT: parent, TRACESTATE: state}


def trace_id_of(headers: Mapping[str, str] | None) -> str | None:
    """The trace id (32 hex digits) of the context in ``headers``, if there is one."""
    parent = trace_headers(headers).get(TRACEPARENT)
    match = _TRACEPARENT.match(parent) if parent else None
    return match.group(1) if match else None


class SpanKind(StrEnum):
    """What a span stands for (OpenTelemetry's kinds that FerrisQueue uses)."""

    PRODUCER = "producer"
    """Creates a job (a submit, a cron tick)."""
    CONSUMER = "consumer"
    """Runs a job delivered from the log (an attempt)."""
    INTERNAL = "internal"
    """Work on a job inside a service (arming a timer)."""


class Span:
    """One span, or (this base) no span: the no-op passes the caller's context through."""

    def __init__(self, context: Mapping[str, str] | None = None) -> None:
        self._context = trace_headers(context)

    @property
    def headers(self) -> dict[str, str]:
        """The context to put on messages this span causes (W3C headers; maybe empty)."""
        return dict(self._context)

    @property
    def trace_id(self) -> str | None:
        return trace_id_of(self._context)

    def event(self, name: str, attributes: Attributes | None = None) -> None:
        """Something happened at this point of the span (``started``, ``failed``...)."""

    def set(self, attributes: Attributes) -> None:
        """Add attributes to the span."""

    def fail(self, error: BaseException | str) -> None:
        """The work the span stands for failed (the span's status is an error)."""

    def end(self) -> None:
        """End the span (and stop it being the current one)."""


class Tracing:
    """Starts spans; this base is the no-op (see the module docstring)."""

    enabled = False
    """Whether spans are recorded (False: :meth:`start` only passes the context through)."""

    def start(
        self,
        name: str,
        *,
        kind: SpanKind,
        parent: Mapping[str, str] | None = None,
        attributes: Attributes | None = None,
        current: bool = False,
    ) -> Span:
        """Start a span. Its parent is the current span if there is one (the gateway's HTTP
        request span), else the context in ``parent``'s headers (a delivered message's), else
        it starts a trace. ``current``: make it the current span until :meth:`Span.end`
        (call both in the same task)."""
        return Span(parent)

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        kind: SpanKind,
        parent: Mapping[str, str] | None = None,
        attributes: Attributes | None = None,
    ) -> Iterator[Span]:
        """:meth:`start` as a block: the current span inside it, ended on leaving it, and
        failed with the exception that leaves it."""
        span = self.start(name, kind=kind, parent=parent, attributes=attributes, current=True)
        try:
            yield span
        except BaseException as exc:
            span.fail(exc)
            raise
        finally:
            span.end()

    def current_trace_id(self) -> str | None:
        """The trace id of the current span (None for the no-op, or outside any span)."""
        return None

    @property
    def tracer_provider(self) -> Any:
        """The OpenTelemetry tracer provider spans are recorded with (None for the no-op);
        for libraries that make their own spans (FastAPI's HTTP spans)."""
        return None

    def shutdown(self) -> None:
        """Export what is buffered (call once at exit)."""


NO_TRACING = Tracing()
"""The no-op (stateless, so one instance serves everyone)."""


def tracing_from_env(service: str, environ: Mapping[str, str] = os.environ) -> Tracing:
    """Tracing as the standard ``OTEL_*`` variables ask: OpenTelemetry when the ``[otel]``
    extra is installed, ``OTEL_SDK_DISABLED`` is not ``true`` and ``OTEL_TRACES_EXPORTER``
    names an exporter other than ``none`` (or an OTLP endpoint is set, for the default
    ``otlp``); else the no-op. ``service`` is the service name unless ``OTEL_SERVICE_NAME``
    (or ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``) says otherwise."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return NO_TRACING
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not exporter and endpoint:
        exporter = "otlp"
    if not exporter or exporter == "none":
        return NO_TRACING
    try:
        from ferrisqueue import otel
    except ImportError as exc:
        log.warning("OTEL_TRACES_EXPORTER is set but the [otel] extra is not installed: %s", exc)
        return NO_TRACING
    return otel.from_env(service, exporter)
