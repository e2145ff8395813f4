"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from gateway.deps import SessionDep
from gateway.nats_link import NatsLink

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "NATS or the read store is unreachable"}})
async def readyz(request: Request, response: Response, session: SessionDep) -> dict[str, bool]:
    """Ready to accept jobs: NATS connected and the read store answering."""
    link: NatsLink = request.app.state.nats
    try:
        await run_in_threadpool(session.exec, text("SELECT 1"))  # type: ignore[call-overload]
        store_ok = True
    except Exception:  # any database error means "not ready", which is the answer we give
        store_ok = False
    checks = {"nats": link.connected, "read_store": store_ok}
    if not all(checks.values()):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return checks
