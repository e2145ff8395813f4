"""Handler failures: retryable errors come back after a backoff, permanent ones and the last
attempt are dead-lettered with the job's original message, and an attempt over its time limit
fails like any other error. Jobs are submitted straight to the log, so each test sets the job's
own options (max_attempts, timeout, retry) without going through the gateway."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from nats.aio.client import Client

from ferrisqueue.domain.backoff import RetryPolicy
from ferrisqueue.domain.events import Canceled, Scheduled, Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import DLQ_STREAM, dlq_subject
from ferrisqueue.log.eventlog import EventLog
from tests.conftest import StartService
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration


async def submit(event_log: EventLog, type_: str, payload: dict[str, Any], **options: Any) -> str:
    job_id = new_job_id()
    await event_log.append(
        Submitted(
            job_id=job_id, queue="default", at=utcnow(), type=type_, payload=payload, **options
        )
    )
    return job_id


async def events_of(nc: Client, job_id: str, kind: str, count: int) -> list[dict[str, Any]]:
    return await collect_events(
        nc, f"fq.job.*.{job_id}.{kind}", until=lambda b: len(b) >= count, timeout=20
    )


def when(event: dict[str, Any], field: str = "at") -> datetime:
    return datetime.fromisoformat(event[field])


async def test_a_retryable_failure_is_retried_after_the_backoff(
    event_log: EventLog, start: StartService, nc: Client
) -> None:
    start("worker")
    job_id = await submit(
        event_log,
        "flaky",
        {"failures": 5},
        max_attempts=3,
        retry=RetryPolicy(base=60, cap=120, jitter=0.25),
    )

    [failed] = await events_of(nc, job_id, "failed", 1)

    assert failed["attempt"] == 1
    assert failed["error"] == "flaky (attempt 1)"
    assert failed["error_type"] == "error:builtins.RuntimeError"
    wait = when(failed, "retry_at") - when(failed)
    assert timedelta(seconds=45) <= wait <= timedelta(seconds=75)  # 60 s ± 25 % jitter


async def test_a_permanent_error_is_dead_lettered_at_once_with_the_original_message(
    event_log: EventLog, start: StartService, nc: Client
) -> None:
    start("worker", FQ_WORKER_ID="w-perm")
    job_id = await submit(event_log, "fail", {"message": "bad address"}, max_attempts=5)

    [failed] = await events_of(nc, job_id, "failed", 1)
    [lettered] = await events_of(nc, job_id, "dead_lettered", 1)

    assert "retry_at" not in failed
    assert lettered["reason"] == "permanent error: bad address"
    letter = await nc.jetstream().get_last_msg(DLQ_STREAM, dlq_subject("default", job_id))
    assert letter.headers is not None
    assert letter.headers["Fq-Attempts"] == "1"
    assert letter.headers["Fq-Last-Worker"] == "w-perm"
    assert letter.headers["Fq-Last-Error"] == "bad address"
    assert b'"bad address"' in (letter.data or b"")  # the submitted event as it was stored


async def test_the_last_attempt_is_dead_lettered(
    event_log: EventLog, start: StartService, nc: Client
) -> None:
    start("worker")
    job_id = await submit(event_log, "flaky", {"failures": 5}, max_attempts=1)

    [failed] = await events_of(nc, job_id, "failed", 1)
    [lettered] = await events_of(nc, job_id, "dead_lettered", 1)

    assert "retry_at" not in failed
    assert lettered["reason"] == "attempts exhausted (1 of 1): flaky (attempt 1)"


async def test_an_attempt_over_its_time_limit_fails_and_the_worker_goes_on(
    event_log: EventLog, start: StartService, nc: Client
) -> None:
    start("worker")
    slow = await submit(event_log, "sleep", {"seconds": 30}, timeout=0.5, max_attempts=1)
    [failed] = await events_of(nc, slow, "failed", 1)
    after = await submit(event_log, "echo", {"n": 1})

    [done] = await events_of(nc, after, "succeeded", 1)

    assert failed["error"] == "timed out after 0.5s"
    assert failed["error_type"] == "timeout"
    assert 400 <= failed["duration_ms"] < 5_000
    assert done["result"] == {"n": 1}
    [lettered] = await events_of(nc, slow, "dead_lettered", 1)
    assert lettered["reason"].startswith("attempts exhausted (1 of 1): timed out")


async def test_an_undecodable_message_is_kept_in_the_dead_letter_stream(
    event_log: EventLog, start: StartService, nc: Client
) -> None:
    start("worker")
    job_id = new_job_id()
    await nc.jetstream().publish(f"fq.job.default.{job_id}.submitted", b"{not json")

    [lettered] = await events_of(nc, job_id, "dead_lettered", 1)

    letter = await nc.jetstream().get_last_msg(DLQ_STREAM, dlq_subject("default", job_id))
    assert letter.data == b"{not json"
    assert letter.headers is not None
    assert letter.headers["Fq-Reason"].startswith("undecodable job: body is not JSON")
    assert lettered["reason"] == letter.headers["Fq-Reason"]


@pytest.mark.timeout(60)
async def test_a_handler_failing_twice_then_succeeding_is_retried_by_the_backoff(
    event_log: EventLog, start: StartService, nc: Client
) -> None:
    start("scheduler")
    start("worker")
    base = 1.0
    job_id = await submit(
        event_log,
        "flaky",
        {"failures": 2},
        max_attempts=3,
        retry=RetryPolicy(base=base, cap=60, jitter=0.1),
    )

    [done] = await events_of(nc, job_id, "succeeded", 1)

    starts = await events_of(nc, job_id, "started", 3)
    failures = await events_of(nc, job_id, "failed", 2)
    assert [s["attempt"] for s in starts] == [1, 2, 3]
    assert done["attempt"] == 3 and done["result"] == {"attempt": 3}
    assert [f["error"] for f in failures] == ["flaky (attempt 1)", "flaky (attempt 2)"]
    for failure, next_start, nominal in zip(failures, starts[1:], (base, 2 * base), strict=True):
        retry_at = when(failure, "retry_at")
        waited = (retry_at - when(failure)).total_seconds()
        assert nominal * 0.9 <= waited <= nominal * 1.1, "the backoff with its jitter"
        late = (when(next_start) - retry_at).total_seconds()
        assert 0 <= late < 1.0, (
            f"attempt {next_start['attempt']} started {late:.3f}s after retry_at"
        )


@pytest.mark.parametrize("state", ["completed", "canceled"])
async def test_a_stale_release_of_a_finished_job_does_not_run_it_again(
    state: str, event_log: EventLog, start: StartService, nc: Client
) -> None:
    start("worker")
    if state == "completed":
        job_id = await submit(event_log, "echo", {})
        await events_of(nc, job_id, "succeeded", 1)
    else:
        job_id = new_job_id()
        await event_log.append(
            Scheduled(
                job_id=job_id,
                queue="default",
                at=utcnow(),
                type="echo",
                run_at=utcnow() + timedelta(hours=1),
            )
        )
        await event_log.append(Canceled(job_id=job_id, queue="default", at=utcnow()))

    # What a timer left over from an earlier wait would deliver: the job's newest event.
    await nc.jetstream().publish(f"fq.job.default.{job_id}.released", b'{"attempt": 0}')
    js = nc.jetstream()
    await wait_until(
        lambda: js.consumer_info("FQ_EVENTS", "fq-worker-default"),
        lambda info: info.num_pending == 0 and info.num_ack_pending == 0,
        timeout=20,
        what="the worker to have handled the release",
    )

    history = [s.event for s in await event_log.history(job_id)]
    assert [e.kind.value for e in history if e is not None].count("started") == (
        1 if state == "completed" else 0
    )
