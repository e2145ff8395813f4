"""What the pages read: the gateway's answers, cached for a few seconds per gateway URL.

A Streamlit app reruns top to bottom on every click; the short ``ttl`` keeps one click from
costing a dozen HTTP calls while the numbers stay at most ``TTL`` seconds old (the sidebar's
Refresh button drops the cache). Errors are not cached: a gateway that comes back is seen on
the next rerun. Every function takes the gateway URL, so two gateways never share answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import streamlit as st

from ferrisqueue.domain.events import utcnow
from ferrisqueue.settings import Settings
from streamlit_app.client import JSON, GatewayClient, GatewayError, GatewayRefused

TTL = 5.0
"""Seconds an answer is reused."""

STATUSES = ("pending", "running", "completed", "failed", "canceled")
"""Every job status, in the order the pages show them (``ferrisqueue.domain.states.JobStatus``)."""


def gateway_url() -> str:
    """Where the gateway is: ``FQ_GATEWAY_URL`` (or host and port), read on every rerun."""
    return str(Settings().gateway_url).rstrip("/")


def _client(url: str, *, timeout: float = 5.0) -> GatewayClient:
    """A client of the gateway at ``url`` sending the dashboard's own read-scoped key:
    ``FQ_DASHBOARD_API_KEY``, else the one ``fq up`` wrote to ``var/dashboard.key`` (read on
    every call: a rotated key is picked up without a restart). Never the operator's key."""
    return GatewayClient(url, timeout=timeout, api_key=Settings().dashboard_client_key())


def clear() -> None:
    """Forget every cached answer (the Refresh button)."""
    st.cache_data.clear()


def reachable(url: str) -> GatewayError | None:
    """None when the gateway answers ``/healthz``; else why not (never cached)."""
    try:
        with _client(url, timeout=2.0) as client:
            client.healthz()
    except GatewayError as exc:
        return exc
    return None


@contextmanager
def section(url: str, what: str) -> Iterator[None]:
    """Run one section of a page; if the gateway fails it, say so there and go on with the
    rest of the page (one failing endpoint, e.g. a 503 while NATS is away, hides only its
    own section)."""
    try:
        yield
    except GatewayRefused as exc:
        st.error(f"Could not load {what}: the gateway at {url} answered {exc}")
    except GatewayError as exc:
        st.error(f"Could not load {what}: {exc}")


@st.cache_data(ttl=TTL, show_spinner=False)
def queues(url: str) -> list[JSON]:
    with _client(url) as client:
        return client.queues()


@st.cache_data(ttl=TTL, show_spinner=False)
def jobs(
    url: str,
    *,
    status: str | None = None,
    queue: str | None = None,
    type: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> JSON:
    with _client(url) as client:
        return client.jobs(status=status, queue=queue, type=type, cursor=cursor, limit=limit)


@st.cache_data(ttl=TTL, show_spinner=False)
def job_status(url: str, job_id: str) -> JSON:
    with _client(url) as client:
        return client.job_status(job_id)


@st.cache_data(ttl=TTL, show_spinner=False)
def job_events(url: str, job_id: str) -> list[JSON]:
    with _client(url) as client:
        return client.job_events(job_id)


@st.cache_data(ttl=TTL, show_spinner=False)
def workers(url: str) -> list[JSON]:
    with _client(url) as client:
        return client.workers()


@st.cache_data(ttl=TTL, show_spinner=False)
def metrics(url: str, *, minutes: int = 60, queue: str | None = None) -> JSON:
    """The last ``minutes`` of per-minute metrics (the window ends now, at fetch time)."""
    until = utcnow()
    with _client(url) as client:
        return client.metrics(since=until - timedelta(minutes=minutes), until=until, queue=queue)


@st.cache_data(ttl=TTL, show_spinner=False)
def dead_letters(
    url: str,
    *,
    queue: str | None = None,
    reason: str | None = None,
    include_resolved: bool = False,
    limit: int = 100,
    type: str | None = None,
    since: datetime | None = None,
) -> JSON:
    """The newest page of dead letters the filters select."""
    with _client(url) as client:
        return client.dead_letters(
            queue=queue,
            reason=reason,
            include_resolved=include_resolved,
            limit=limit,
            type=type,
            since=since,
        )


@st.cache_data(ttl=TTL, show_spinner=False)
def projections(url: str) -> list[JSON]:
    with _client(url) as client:
        return client.projections()


@st.cache_data(ttl=TTL, show_spinner=False)
def schedules(url: str, *, next: int = 3) -> list[JSON]:
    """Every cron schedule with its next fire times."""
    with _client(url) as client:
        return client.schedules(next=next)


@st.cache_data(ttl=60.0, show_spinner=False)
def job_types(url: str) -> list[JSON]:
    """Job types change only when the gateway restarts with other plugins: cached longer."""
    with _client(url) as client:
        return client.job_types()


@st.cache_data(ttl=TTL, show_spinner=False)
def waiting_jobs(url: str, *, reason: str, cursor: str | None = None, limit: int = 50) -> JSON:
    with _client(url) as client:
        return client.waiting_jobs(reason=reason, cursor=cursor, limit=limit)


@st.cache_data(ttl=TTL, show_spinner=False)
def schedule_jobs(url: str, name: str, *, limit: int = 5) -> list[JSON]:
    with _client(url) as client:
        return client.schedule_jobs(name, limit=limit)


@st.cache_data(ttl=TTL, show_spinner=False)
def queue_stats(url: str, queue: str, *, minutes: int = 60) -> JSON:
    """The last ``minutes`` of one queue (the window ends now, at fetch time)."""
    until = utcnow()
    with _client(url) as client:
        return client.queue_stats(queue, since=until - timedelta(minutes=minutes), until=until)


@st.cache_data(ttl=TTL, show_spinner=False)
def error_groups(url: str, *, minutes: int = 1440) -> JSON:
    """Error groups of the last ``minutes`` (the window ends now, at fetch time)."""
    until = utcnow()
    with _client(url) as client:
        return client.error_groups(since=until - timedelta(minutes=minutes), until=until)


@st.cache_data(ttl=TTL, show_spinner=False)
def error_attempts(url: str, key: str, *, cursor: str | None = None, limit: int = 50) -> JSON:
    with _client(url) as client:
        return client.error_attempts(key, cursor=cursor, limit=limit)


def queue_names(url: str) -> list[str]:
    """Every queue that has jobs."""
    return [row["queue"] for row in queues(url)]


def submit(
    url: str, type: str, payload: dict[str, Any], queue: str, *, api_key: str | None
) -> JSON:
    """An operator action: sent with the operator's own key (``api_key``, from
    :func:`streamlit_app.login.operator`), not the dashboard's read-only one. Never cached;
    drops the cache so the new job shows up on the next rerun."""
    with GatewayClient(url, api_key=api_key) as client:
        accepted = client.submit(type, payload, queue)
    clear()
    return accepted
