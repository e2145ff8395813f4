"""A job's W3C trace context travels in the log without OpenTelemetry: the producer's
``traceparent`` / ``tracestate`` on the creation event are on every event the worker appends
for it, on the timer the scheduler arms for a delay or a retry, and so on the ``released``
the server fires, and the handler sees them (the in-memory log fires timers and keeps their
headers as the server does)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from ferrisqueue.domain.backoff import RetryPolicy
from ferrisqueue.domain.events import Scheduled, Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import EVENT_STREAM, job_history_filter
from ferrisqueue.log.memlog import MemoryLog
from scheduler.timers import TimerRelay
from tests.support.memory import WAIT, memory_log, running_worker, serving, wait_for_kinds
from worker.context import JobContext
from worker.registry import TaskRegistry

pytestmark = pytest.mark.timeout(10)

TRACE = {
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tracestate": "vendor=abc",
}


@pytest.fixture
async def log() -> MemoryLog:
    return await memory_log()


@pytest.fixture
async def relay(log: MemoryLog) -> AsyncIterator[TimerRelay]:
    async with serving(TimerRelay(log.connect())) as relay:
        yield relay


def flaky_registry(seen: list[Mapping[str, str]]) -> TaskRegistry:
    registry = TaskRegistry()

    async def flaky(ctx: JobContext, payload: dict[str, Any]) -> int:
        seen.append(dict(ctx.trace))
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return ctx.attempt

    registry.task("flaky")(flaky)
    return registry


def headers_by_kind(log: MemoryLog, job_id: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (m.subject.rsplit(".", 1)[-1], m.headers)
        for m in log.messages(EVENT_STREAM, job_history_filter(job_id))
    ]


async def test_a_delayed_and_retried_job_carries_its_producers_trace_on_every_event(
    log: MemoryLog, relay: TimerRelay
) -> None:
    job = new_job_id()
    seen: list[Mapping[str, str]] = []
    await log.append(
        Scheduled(
            job_id=job,
            queue="default",
            at=utcnow(),
            type="flaky",
            run_at=log.now,
            retry=RetryPolicy(base=1, cap=1, jitter=0),
        ),
        headers=TRACE,
    )
    async with running_worker(log, flaky_registry(seen)):
        await relay.signals.handled.reached(1, timeout=WAIT)
        log.advance(0.01)
        await wait_for_kinds(log, job, "failed")
        await relay.signals.handled.reached(2, timeout=WAIT)
        log.advance(60)
        await wait_for_kinds(log, job, "failed", "released", "succeeded")

    history = headers_by_kind(log, job)
    assert [kind for kind, _ in history] == [
        "scheduled", "released", "started", "failed", "released", "started", "succeeded"
    ]  # fmt: skip
    for kind, headers in history:
        assert {k: headers.get(k) for k in TRACE} == TRACE, kind
    assert seen == [TRACE, TRACE]


async def test_a_job_without_a_trace_gets_none_and_a_malformed_one_is_not_passed_on(
    log: MemoryLog,
) -> None:
    plain, malformed = new_job_id(), new_job_id()
    for job, headers in ((plain, None), (malformed, {"traceparent": "00-not-a-trace"})):
        await log.append(
            Submitted(job_id=job, queue="default", at=utcnow(), type="flaky", max_attempts=1),
            headers=headers,
        )
    seen: list[Mapping[str, str]] = []
    async with running_worker(log, flaky_registry(seen)):
        await wait_for_kinds(log, plain, "failed")
        await wait_for_kinds(log, malformed, "failed")

    for job in (plain, malformed):
        for kind, headers in headers_by_kind(log, job)[1:]:
            assert "traceparent" not in headers, kind
    assert seen == [{}, {}]
