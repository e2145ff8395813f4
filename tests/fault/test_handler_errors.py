"""Handler errors: a retryable error is retried (after a backoff the scheduler's timer relay
releases) until it succeeds; a ``Permanent`` error is dead-lettered after one attempt; a job
out of attempts is dead-lettered. The workers go on throughout."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.events import DeadLettered, Failed, Released
from ferrisqueue.domain.subjects import DLQ_STREAM, dlq_subject
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.fault.system import consuming
from tests.support.history import History, JobTrace, verify

pytestmark = pytest.mark.fault

QUICK_RETRY = {"base": 0.2, "cap": 0.5, "jitter": 0}
KINDS: dict[str, tuple[dict[str, Any], str, int]] = {
    # op prefix: (job, expected outcome, starts)
    "flaky": (
        {"type": "flaky", "payload": {"failures": 2}, "max_attempts": 4, "retry": QUICK_RETRY},
        "completed",
        3,
    ),
    "permanent": (
        {"type": "fail", "payload": {"message": "no such customer"}, "max_attempts": 4},
        "dead_lettered",
        1,
    ),
    "exhausted": (
        {"type": "flaky", "payload": {"failures": 9}, "max_attempts": 2, "retry": QUICK_RETRY},
        "dead_lettered",
        2,
    ),
    "fine": ({"type": "echo"}, "completed", 1),
}
EACH = 8


@pytest.mark.timeout(50)
async def test_retryable_errors_retry_and_permanent_or_exhausted_ones_are_dead_lettered(
    start: StartService, nc: Client, producer: Producer, history: History, store: Engine
) -> None:
    start("projections")
    start("scheduler")  # the timer relay releases each retry at its retry_at
    workers = [start("worker", FQ_WORKER_ID=f"w{n}") for n in (1, 2)]
    await consuming(nc, waiting=2)

    for n in range(EACH):
        for kind, (job, outcome, _) in KINDS.items():
            await producer.submit(f"{kind}-{n}", job, expect=(outcome,))
    verdict = await verify(nc, history, store)

    verdict.assert_ok()  # reruns are explained only by a failure with a retry_at
    assert verdict.observed is not None
    js = nc.jetstream()
    for kind, (_, outcome, runs) in KINDS.items():
        for n in range(EACH):
            job_id = history.ops[f"{kind}-{n}"].job_id or ""
            trace = verdict.observed.jobs[job_id]
            assert [s.attempt for s in trace.starts] == list(range(1, runs + 1)), kind
            failures = _failures(trace)
            if kind == "flaky":
                assert all(f.retry_at is not None for f in failures)
                assert _released(trace) == [1, 2]
            if kind == "permanent":
                [failed] = failures
                assert failed.retry_at is None
                assert failed.error_type == "permanent:ferrisqueue.errors.Permanent"
                assert _reason(trace) == "permanent error: no such customer"
            if kind == "exhausted":
                assert [f.retry_at is None for f in failures] == [False, True]
                assert _reason(trace) == "attempts exhausted (2 of 2): flaky (attempt 2)"
            if outcome == "dead_lettered":
                letter = await js.get_last_msg(DLQ_STREAM, dlq_subject("default", job_id))
                assert letter.data == trace.messages[0].data
    assert all(worker.alive() for worker in workers)


def _failures(trace: JobTrace) -> list[Failed]:
    return [m.event for m in trace.messages if isinstance(m.event, Failed)]


def _released(trace: JobTrace) -> list[int]:
    return [m.event.attempt for m in trace.messages if isinstance(m.event, Released)]


def _reason(trace: JobTrace) -> str:
    """Why the job was dead-lettered (its ``last_error`` stays the handler's own error)."""
    [reason] = [m.event.reason for m in trace.messages if isinstance(m.event, DeadLettered)]
    return reason
