"""The dashboard's queries: plain HTTP calls to the gateway (the dashboard owns no data).

Every answer is the gateway's JSON as plain dicts and lists, so the pages can cache it with
``st.cache_data`` (which pickles). httpx's exceptions stop here: callers see
:class:`GatewayUnavailable` (no answer: down, wrong URL, timeout) or :class:`GatewayRefused`
(an HTTP error answer, with the gateway's own reason).
"""

from __future__ import annotations

import functools
import ssl
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from ferrisqueue.errors import FerrisQueueError

JSON = dict[str, Any]


class GatewayError(FerrisQueueError):
    """The gateway did not give the dashboard what it asked for."""


class GatewayUnavailable(GatewayError):
    """No HTTP answer at all: the gateway is down, the URL is wrong, or it timed out."""

    def __init__(self, base_url: str, cause: httpx.TransportError) -> None:
        self.base_url = base_url
        self.cause = cause
        super().__init__(f"no answer from the gateway at {base_url}: {_describe(cause)}")


class GatewayRefused(GatewayError):
    """An HTTP error answer (4xx, 5xx); ``reason`` is the gateway's explanation."""

    def __init__(self, status_code: int, reason: str) -> None:
        self.status_code = status_code
        self.reason = reason
        super().__init__(f"HTTP {status_code}: {reason}")


def problem_reason(response: httpx.Response) -> str:
    """The human reason of an error answer: FastAPI's ``detail`` (a string, or for 422 a
    list of field errors, rendered ``field.path: message``), else the body's text."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text.strip() or response.reason_phrase
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        lines = []
        for error in detail:
            loc = [str(part) for part in error.get("loc", []) if part != "body"]
            where = ".".join(loc) or "body"
            lines.append(f"{where}: {error.get('msg', error)}")
        return "; ".join(lines)
    return response.text.strip() or response.reason_phrase


class GatewayClient:
    """Reads (and submits to) the gateway's API; use as a context manager."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        """``api_key``: sent as ``Authorization: Bearer <key>`` on every request."""
        self.base_url = base_url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers=headers,
            verify=_tls_context(),
        )

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- reads ------------------------------------------------------------------------------

    def healthz(self) -> bool:
        """True when the gateway process answers."""
        return bool(self._get("/healthz").get("status") == "ok")

    def queues(self) -> list[JSON]:
        """Jobs per status in each queue: ``[{"queue": ..., "counts": {status: n}}]``."""
        answer: list[JSON] = self._get("/queues")
        return answer

    def jobs(
        self,
        *,
        status: str | None = None,
        queue: str | None = None,
        type: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JSON:
        """One page of jobs, newest first: ``{"items": [...], "next_cursor": ...}``."""
        params = _params(status=status, queue=queue, type=type, cursor=cursor, limit=limit)
        answer: JSON = self._get("/jobs", params=params)
        return answer

    def job_status(self, job_id: str) -> JSON:
        answer: JSON = self._get(f"/jobs/{job_id}/status")
        return answer

    def job_events(self, job_id: str) -> list[JSON]:
        """The job's audit trail from the event log, oldest first."""
        answer: list[JSON] = self._get(f"/jobs/{job_id}/events")
        return answer

    def workers(self) -> list[JSON]:
        answer: list[JSON] = self._get("/workers")
        return answer

    def metrics(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        queue: str | None = None,
        type: str | None = None,
    ) -> JSON:
        """Per-minute counts and latency percentiles, and their totals."""
        params = _params(
            since=since.isoformat() if since else None,
            until=until.isoformat() if until else None,
            queue=queue,
            type=type,
        )
        answer: JSON = self._get("/stats/throughput", params=params)
        return answer

    def dead_letters(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        reason: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        include_resolved: bool = False,
        cursor: str | None = None,
        limit: int = 100,
    ) -> JSON:
        """One page of dead letters, newest first: ``{"items": [...], "next_cursor": ...}``."""
        params = _params(
            queue=queue,
            type=type,
            reason=reason,
            since=since.isoformat() if since else None,
            until=until.isoformat() if until else None,
            include_resolved=include_resolved or None,
            cursor=cursor,
            limit=limit,
        )
        answer: JSON = self._get("/dead-letters", params=params)
        return answer

    def projections(self) -> list[JSON]:
        answer: list[JSON] = self._get("/projections")
        return answer

    def job_types(self) -> list[JSON]:
        """Every job type with a contract (name, description, payload and result schemas)."""
        answer: list[JSON] = self._get("/job-types")
        return answer

    def waiting_jobs(
        self, *, reason: str = "scheduled", cursor: str | None = None, limit: int = 50
    ) -> JSON:
        """Jobs waiting for a time, soonest first: ``{"items", "next_cursor", "counts"}``."""
        params = _params(reason=reason, cursor=cursor, limit=limit)
        answer: JSON = self._get("/jobs/waiting", params=params)
        return answer

    def schedules(self, *, next: int = 3) -> list[JSON]:
        """Every periodic schedule with its next ``next`` fire times."""
        answer: list[JSON] = self._get("/schedules", params={"next": next})
        return answer

    def schedule_jobs(self, name: str, *, limit: int = 5) -> list[JSON]:
        """The newest jobs schedule ``name`` created, newest first."""
        answer: list[JSON] = self._get(f"/schedules/{name}/jobs", params={"limit": limit})
        return answer

    def queue_stats(self, queue: str, *, since: datetime, until: datetime) -> JSON:
        """One queue's minutes, totals per job type and depth by state over [since, until)."""
        params = {"since": since.isoformat(), "until": until.isoformat()}
        answer: JSON = self._get(f"/stats/queues/{queue}", params=params)
        return answer

    def error_groups(self, *, since: datetime, until: datetime) -> JSON:
        """Failed attempts grouped by error type and message, each with its trend."""
        params = {"since": since.isoformat(), "until": until.isoformat()}
        answer: JSON = self._get("/errors", params=params)
        return answer

    def error_attempts(self, key: str, *, cursor: str | None = None, limit: int = 50) -> JSON:
        """One page of an error group's failed attempts, newest first."""
        params = _params(cursor=cursor, limit=limit)
        answer: JSON = self._get(f"/errors/{key}/attempts", params=params)
        return answer

    # --- writes -----------------------------------------------------------------------------

    def submit(self, type: str, payload: JSON, queue: str) -> JSON:
        """POST /jobs; the 202 answer (``job_id``, ``status_url``...) or GatewayRefused."""
        answer: JSON = self._send(
            "POST", "/jobs", json={"type": type, "payload": payload, "queue": queue}
        )
        return answer

    def cancel(self, job_id: str) -> JSON:
        """POST /jobs/{id}/cancel: the job as the log holds it after the cancel."""
        answer: JSON = self._send("POST", f"/jobs/{job_id}/cancel")
        return answer

    def dead_letter_action(
        self,
        action: str,
        *,
        job_ids: list[str] | None = None,
        filter: JSON | None = None,
        reason: str | None = None,
    ) -> JSON:
        """POST /dead-letters/redrive or /purge (``action``) of the listed jobs or of those
        ``filter`` selects (queue, type, reason, since, until); one outcome per job."""
        body = _params(job_ids=job_ids, filter=filter, reason=reason)
        answer: JSON = self._send("POST", f"/dead-letters/{action}", json=body)
        return answer

    def queue_control(self, queue: str, action: str, *, reason: str | None = None) -> JSON:
        """POST /queues/{queue}/pause or /resume (``action``): the queue's control state."""
        body = {"reason": reason} if reason else None
        answer: JSON = self._send("POST", f"/queues/{queue}/{action}", json=body)
        return answer

    def queue_events(self, queue: str) -> list[JSON]:
        """The queue's pauses and resumes, oldest first."""
        answer: list[JSON] = self._get(f"/queues/{queue}/events")
        return answer

    def schedule_action(self, name: str, action: str) -> JSON:
        """POST /schedules/{name}/pause, /resume or /trigger (``action``)."""
        answer: JSON = self._send("POST", f"/schedules/{name}/{action}")
        return answer

    # --- plumbing ---------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._send("GET", path, params=params)

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnavailable(self.base_url, exc) from exc
        if response.is_error:
            raise GatewayRefused(response.status_code, problem_reason(response))
        try:
            return response.json()
        except ValueError as exc:
            raise GatewayRefused(response.status_code, "the answer is not JSON") from exc


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, made once: a page makes a client per gateway call, and
    loading the CA bundle for each took 60-100 ms (most of a page's time at any size)."""
    return httpx.create_ssl_context()


def _params(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _describe(exc: httpx.TransportError) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
