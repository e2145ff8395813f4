"""The app factory: ``create_app(settings)`` builds everything; nothing happens at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig

from ferrisqueue import __version__
from ferrisqueue.errors import (
    IdempotencyConflict,
    NatsUnavailable,
    PayloadTooLarge,
    PublishOutcomeUnknown,
    PublishRejected,
)
from ferrisqueue.jobtypes import load_job_types
from ferrisqueue.logs import LogFormat
from ferrisqueue.settings import Settings
from ferrisqueue.store.db import init_schema, make_engine
from ferrisqueue.tracing import NO_TRACING, Tracing
from gateway.admission import Admission
from gateway.auth import RateLimited
from gateway.deps import bind_job_log_fields
from gateway.fastsubmit import FastSubmit
from gateway.limits import BodyLimits
from gateway.metrics import instrument, shed_counter
from gateway.nats_link import NatsLink
from gateway.routes import (
    batch,
    dead_letters,
    health,
    insights,
    jobs,
    observe,
    queues,
    schedules,
)

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, tracing: Tracing = NO_TRACING) -> FastAPI:
    """The gateway for ``settings``: connects to NATS and the read store in its lifespan.
    With ``tracing`` on, each request is a span (FastAPI's own, continuing the caller's
    ``traceparent``) and each submit a child of it, whose context the job carries."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.effective_database_url)
        init_schema(engine)
        link = NatsLink(settings)
        await link.start()
        app.state.settings, app.state.engine, app.state.nats = settings, engine, link
        app.state.job_types = load_job_types()
        app.state.tracing = tracing
        try:
            yield
        finally:
            await link.close()
            engine.dispose()

    app = FastAPI(
        title="FerrisQueue",
        version=__version__,
        description="Submit jobs and follow them. Every change is an event in NATS JetStream.",
        lifespan=lifespan,
        telemetry=_telemetry(tracing),
        # Only JSON logs show a record's job: no dependency on every request otherwise.
        dependencies=[Depends(bind_job_log_fields)]
        if settings.log_format is LogFormat.JSON
        else [],
    )
    app.include_router(insights.router)  # before jobs: /jobs/waiting is not a job id
    app.include_router(jobs.router)
    app.include_router(batch.router)
    app.include_router(queues.router)
    app.include_router(jobs.types_router)
    app.include_router(observe.router)
    app.include_router(dead_letters.router)
    app.include_router(schedules.router)
    app.include_router(health.router)
    if not tracing.enabled:
        # The innermost of ours: a submission it answers is still limited, counted, timed.
        app.add_middleware(FastSubmit, gateway=app)
    registry = instrument(app) if settings.metrics_enabled else None
    app.add_middleware(
        BodyLimits,
        max_bytes=settings.gateway_max_body_bytes,
        timeout=settings.gateway_body_timeout,
    )
    if settings.gateway_max_inflight or settings.gateway_max_queue_wait:
        # Added last: the outermost of ours, so a refused submission costs next to nothing.
        app.add_middleware(
            Admission,
            max_inflight=settings.gateway_max_inflight,
            max_wait=settings.gateway_max_queue_wait or None,
            retry_after=settings.retry_after_seconds,
            shed=shed_counter(registry) if registry is not None else None,
        )

    retry_after = {"Retry-After": str(settings.retry_after_seconds)}

    @app.exception_handler(NatsUnavailable)
    @app.exception_handler(PublishRejected)
    async def nats_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("answering 503: %s", exc)
        return JSONResponse(
            {"detail": f"the event log is unavailable, retry later: {exc}"},
            status_code=503,
            headers=retry_after,
        )

    @app.exception_handler(RateLimited)
    async def rate_limited(_request: Request, exc: Exception) -> JSONResponse:
        wait = exc.retry_after if isinstance(exc, RateLimited) else 1
        return JSONResponse(
            {"detail": str(exc)}, status_code=429, headers={"Retry-After": str(wait)}
        )

    @app.exception_handler(PayloadTooLarge)
    async def too_large(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(IdempotencyConflict)
    async def key_reused(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(PublishOutcomeUnknown)
    async def outcome_unknown(_request: Request, exc: Exception) -> JSONResponse:
        # The job may have been stored: the client must retry, with the same
        # Idempotency-Key so that the retry cannot become a second job.
        log.warning("answering 503 (outcome unknown): %s", exc)
        return JSONResponse(
            {
                "detail": f"JetStream did not confirm the job in time; it may or may not be "
                f"stored. Retry later. ({exc})"
            },
            status_code=503,
            headers=retry_after,
        )

    return app


def _telemetry(tracing: Tracing) -> TelemetryConfig:
    """FastAPI's own OpenTelemetry: HTTP request spans on our tracer provider when tracing
    is on, nothing at all when it is off; never its metrics (Prometheus has those), logs or
    exporters from the environment (``FASTAPI_OTEL_AUTO_CONFIGURE``): the ``OTEL_*``
    variables configure our provider instead."""
    off: TelemetryConfig = {
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "auto_configure": False,
    }
    if not tracing.enabled:
        return {**off, "tracing": False}
    return {**off, "tracing": True, "tracer_provider": tracing.tracer_provider}
