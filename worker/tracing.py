"""Worker middleware: one span per attempt, in the job's trace.

The span (``fq attempt <type>``, kind consumer) is a child of the trace context the job's
message carried (:attr:`worker.context.JobContext.trace`: the submit's, on a ``submitted``
and on the ``released`` of a delay or a retry alike), so every attempt of a job hangs under
its submit in one trace. It is the current span while the handler runs (a handler's own
spans nest in it) and records ``started`` and the outcome (``succeeded``, ``failed`` with
``fq.will_retry``, ``canceled``, ``interrupted``) as span events. Installed only when tracing
is on (:func:`ferrisqueue.tracing.tracing_from_env`): without it no attempt pays for it.
"""

from __future__ import annotations

from typing import Any

from ferrisqueue.tracing import Span, SpanKind, Tracing
from worker.context import JobContext
from worker.middleware import AttemptOutcome, AttemptStatus, Middleware


class TraceAttempts(Middleware):
    """A span around every attempt (see the module docstring)."""

    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing
        self._spans: dict[int, Span] = {}
        """The open spans, by the attempt's context (one per attempt running here)."""

    async def before_attempt(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        span = self._tracing.start(
            f"fq attempt {ctx.type}",
            kind=SpanKind.CONSUMER,
            parent=ctx.trace,
            attributes={
                "fq.job_id": ctx.job_id,
                "fq.queue": ctx.queue,
                "fq.job_type": ctx.type,
                "fq.attempt": ctx.attempt,
                "fq.worker_id": ctx.worker,
            },
            current=True,
        )
        span.event("started")
        self._spans[id(ctx)] = span

    async def after_success(self, ctx: JobContext, result: Any) -> None:
        if (span := self._spans.get(id(ctx))) is not None:
            span.event("succeeded")

    async def on_error(self, ctx: JobContext, error: BaseException, *, will_retry: bool) -> None:
        if (span := self._spans.get(id(ctx))) is not None:
            span.event("failed", {"fq.will_retry": will_retry})
            span.fail(error)

    async def after_attempt(self, ctx: JobContext, outcome: AttemptOutcome) -> None:
        span = self._spans.pop(id(ctx), None)
        if span is None:
            return
        if outcome.status in (AttemptStatus.CANCELED, AttemptStatus.INTERRUPTED):
            span.event(outcome.status.value)
        span.set({"fq.outcome": outcome.status.value})
        span.end()
