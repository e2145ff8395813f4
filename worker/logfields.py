"""Worker middleware: the attempt's ``job_id``, ``queue``, ``attempt``, ``worker_id`` and
``trace_id`` on every log record made while it runs (the handler's, the executor's, a
library's), through :func:`ferrisqueue.logs.bind_log_fields`. ``FQ_LOG_FORMAT=json`` writes
them as fields; the text format leaves them out.

It goes after :class:`worker.tracing.TraceAttempts` (further in), so the trace id is the
attempt span's; without tracing it is the one the job's ``traceparent`` names, if any.
"""

from __future__ import annotations

from contextvars import Token
from typing import Any

from ferrisqueue.logs import LogFields, bind_log_fields, reset_log_fields
from ferrisqueue.tracing import NO_TRACING, Tracing, trace_id_of
from worker.context import JobContext
from worker.middleware import AttemptOutcome, Middleware


class AttemptLogFields(Middleware):
    """Binds the attempt's log fields from ``before_attempt`` to ``after_attempt``."""

    def __init__(self, tracing: Tracing = NO_TRACING) -> None:
        self._tracing = tracing
        self._tokens: dict[int, Token[LogFields]] = {}

    async def before_attempt(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        self._tokens[id(ctx)] = bind_log_fields(
            job_id=ctx.job_id,
            queue=ctx.queue,
            attempt=ctx.attempt,
            worker_id=ctx.worker,
            trace_id=self._tracing.current_trace_id() or trace_id_of(ctx.trace),
        )

    async def after_attempt(self, ctx: JobContext, outcome: AttemptOutcome) -> None:
        if (token := self._tokens.pop(id(ctx), None)) is not None:
            reset_log_fields(token)
