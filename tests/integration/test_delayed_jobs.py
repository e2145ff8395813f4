"""Delayed jobs end to end on a real nats-server: the gateway, the CLI's raw NATS path, the
scheduler's timer relay, the server's ``@at`` timers sourced back as ``released`` events, and
workers. Timing is asserted from the events' own times, never by sleeping."""

from __future__ import annotations

import asyncio
import functools
import json
import statistics
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats.js.errors
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.events import Canceled, CancelRequested, Scheduled, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import EVENT_STREAM, SCHEDULE_STREAM, timer_subject
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.topology import worker_consumer_name
from ferrisqueue.settings import Settings
from scheduler.timers import TIMER_CONSUMER
from tests.conftest import StartService
from tests.support.procs import ServiceProcess, run_fq
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration

ON_TIME = timedelta(seconds=1)
"""A delayed job starts at most this long after it is due (the issue's promise)."""


def at(body: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(body["at"])


async def events_of(nc: Client, job_id: str, kind: str, count: int = 1) -> list[dict[str, Any]]:
    return await collect_events(
        nc, f"fq.job.*.{job_id}.{kind}", until=lambda b: len(b) >= count, timeout=20
    )


async def timer_of(nc: Client, job_id: str) -> bytes | None:
    """The job's armed timer in FQ_SCHEDULES, or None."""
    try:
        msg = await nc.jetstream().get_last_msg(SCHEDULE_STREAM, timer_subject("default", job_id))
    except nats.js.errors.NotFoundError:
        return None
    return msg.data


async def run_at_of(event_log: EventLog, job_id: str) -> datetime:
    creation = (await event_log.history(job_id))[0].event
    assert isinstance(creation, Scheduled), creation
    return creation.run_at


async def test_a_job_submitted_with_a_delay_waits_scheduled_then_runs_when_due(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    start("scheduler")
    start("worker")
    await services_ready(nc)

    answer = await gateway.post("/jobs", json={"type": "echo", "payload": {"n": 1}, "delay": 1.5})
    assert answer.status_code == 202, answer.text
    job_id, run_at = answer.json()["job_id"], datetime.fromisoformat(answer.json()["run_at"])
    waiting = (await gateway.get(f"/jobs/{job_id}/status")).json()

    succeeded = await events_of(nc, job_id, "succeeded")
    started = at((await events_of(nc, job_id, "started"))[0])
    done = await wait_until(
        lambda: gateway.get(f"/jobs/{job_id}/status"),
        lambda r: r.json()["status"] == "completed",
        timeout=10,
        what="completed status",
    )

    assert (waiting["status"], waiting["pending_reason"]) == ("pending", "scheduled")
    assert datetime.fromisoformat(waiting["run_at"]) == run_at
    assert run_at <= started <= run_at + ON_TIME, (run_at, started)
    assert succeeded[0]["result"] == {"n": 1}
    assert done.json()["attempts"] == 1


async def test_a_run_at_in_the_past_or_no_delay_just_submits(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    past = (utcnow() - timedelta(minutes=1)).isoformat()
    for options in ({"run_at": past}, {"delay": 0}):
        answer = await gateway.post("/jobs", json={"type": "echo", **options})
        assert answer.status_code == 202, answer.text
        assert answer.json()["run_at"] is None
        await events_of(nc, answer.json()["job_id"], "submitted")


async def test_run_at_and_delay_together_are_refused(gateway: httpx.AsyncClient) -> None:
    answer = await gateway.post(
        "/jobs", json={"type": "echo", "delay": 5, "run_at": "2030-01-01T00:00:00Z"}
    )

    assert answer.status_code == 422
    assert "give run_at or delay, not both" in answer.text


async def test_an_idempotent_delayed_submission_is_one_scheduled_job(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    body = {"type": "echo", "delay": 60, "max_attempts": 2, "timeout": 5}
    headers = {"Idempotency-Key": "delayed-once"}

    first = await gateway.post("/jobs", json=body, headers=headers)
    again = await gateway.post("/jobs", json=body, headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    created = await events_of(nc, first.json()["job_id"], "scheduled")
    assert len(created) == 1
    assert (created[0]["max_attempts"], created[0]["timeout"]) == (2, 5)


async def test_a_raw_nats_scheduled_message_with_a_delay_runs_after_it(
    start: StartService, nc: Client, event_log: EventLog
) -> None:
    start("scheduler")
    start("worker")
    await services_ready(nc)
    job_id = new_job_id()

    await nc.jetstream().publish(
        f"fq.job.default.{job_id}.scheduled", json.dumps({"type": "echo", "delay": 1}).encode()
    )
    succeeded = await events_of(nc, job_id, "succeeded")
    started = at((await events_of(nc, job_id, "started"))[0])

    run_at = await run_at_of(event_log, job_id)
    assert run_at <= started <= run_at + ON_TIME, (run_at, started)
    assert succeeded[0]["attempt"] == 1


async def test_a_canceled_scheduled_job_loses_its_timer_and_never_runs(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    start("scheduler")
    start("worker")
    await services_ready(nc)
    doomed = (await gateway.post("/jobs", json={"type": "echo", "delay": 2})).json()["job_id"]
    await wait_until(lambda: timer_of(nc, doomed), bool, timeout=10, what="the timer armed")

    canceled = await gateway.post(f"/jobs/{doomed}/cancel")
    timer_after_cancel = await timer_of(nc, doomed)
    # A job due after the canceled one: once it ran, the canceled one's time has passed too.
    later = (await gateway.post("/jobs", json={"type": "echo", "delay": 3})).json()
    await events_of(nc, later["job_id"], "succeeded")
    doomed_events = await collect_events(
        nc, f"fq.job.*.{doomed}.*", until=lambda b: len(b) >= 3, timeout=5
    )

    assert canceled.status_code == 202
    assert canceled.json()["status"] == "canceled"
    assert timer_after_cancel is None
    assert [e["_subject"].rsplit(".", 1)[1] for e in doomed_events] == [
        "scheduled",
        "cancel_requested",
        "canceled",
    ]


async def test_a_canceled_event_from_anywhere_removes_the_timer(
    start: StartService, nc: Client, event_log: EventLog
) -> None:
    """The relay purges a timer for any ``canceled`` in the log, not only the gateway's."""
    start("scheduler")
    job_id = new_job_id()
    now = utcnow()
    await event_log.append(
        Scheduled(
            job_id=job_id, queue="default", at=now, type="echo", run_at=now + timedelta(hours=1)
        )
    )
    await wait_until(lambda: timer_of(nc, job_id), bool, timeout=10, what="the timer armed")

    await event_log.append(CancelRequested(job_id=job_id, queue="default", at=utcnow()))
    await event_log.append(Canceled(job_id=job_id, queue="default", at=utcnow()))

    await wait_until(
        lambda: timer_of(nc, job_id), lambda t: t is None, timeout=10, what="timer removed"
    )


async def test_fq_submit_delays_over_http_and_over_nats(
    gateway: httpx.AsyncClient, settings: Settings, tmp_path: Path, event_log: EventLog
) -> None:
    over_http = await run_fq(settings, tmp_path, "submit", "echo", "--delay", "30")
    over_nats = await run_fq(
        settings,
        tmp_path,
        "submit",
        "echo",
        "--nats",
        "--run-at",
        (utcnow() + timedelta(minutes=5)).isoformat(),
        "--max-attempts",
        "4",
        "--timeout",
        "9",
    )
    both = await run_fq(settings, tmp_path, "submit", "echo", "--delay", "1", "--run-at", "x")

    assert over_http.returncode == 0, over_http.stderr
    assert over_nats.returncode == 0, over_nats.stderr
    assert both.returncode != 0 and "not both" in both.stderr
    http_job = (await event_log.history(over_http.stdout.strip()))[0].event
    nats_job = (await event_log.history(over_nats.stdout.strip()))[0].event
    assert isinstance(http_job, Scheduled) and isinstance(nats_job, Scheduled)
    assert timedelta(seconds=25) < http_job.run_at - http_job.at <= timedelta(seconds=30)
    assert (nats_job.max_attempts, nats_job.timeout) == (4, 9)
    assert nats_job.actor is not None and nats_job.actor.startswith("cli:")


# --- Many jobs, crashes and two schedulers -------------------------------------------------


async def schedule_many(
    event_log: EventLog, start_at: datetime, count: int, first: float, last: float
) -> dict[str, datetime]:
    """Append ``count`` scheduled echo jobs due evenly in [start_at+first, start_at+last] s."""
    slots = asyncio.Semaphore(64)
    due = {
        new_job_id(): start_at + timedelta(seconds=first + (last - first) * i / max(1, count - 1))
        for i in range(count)
    }

    async def one(job_id: str, run_at: datetime) -> None:
        async with slots:
            event = Scheduled(
                job_id=job_id, queue="default", at=utcnow(), type="echo", run_at=run_at
            )
            await event_log.append(event)

    await asyncio.gather(*(one(job_id, run_at) for job_id, run_at in due.items()))
    return due


async def count_stored(nc: Client, subject: str) -> int:
    info = await nc.jetstream().stream_info(EVENT_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def relay_idle(nc: Client) -> bool:
    info = await nc.jetstream().consumer_info(EVENT_STREAM, TIMER_CONSUMER)
    return (info.num_pending, info.num_ack_pending) == (0, 0)


def lateness_report(name: str, late: list[float]) -> str:
    cuts = statistics.quantiles(late, n=100)
    return (
        f"{name}: start - run_at over {len(late)} jobs (ms): min {min(late):.0f}, "
        f"p50 {cuts[49]:.0f}, p95 {cuts[94]:.0f}, p99 {cuts[98]:.0f}, max {max(late):.0f}"
    )


async def check_every_job_ran_once_on_time(nc: Client, due: dict[str, datetime], name: str) -> None:
    """Every job started exactly once, was released exactly once, none early, all within
    ON_TIME of its due time; prints the distribution of the lateness."""
    await when(lambda: stored_at_least(nc, "fq.job.*.*.succeeded", len(due)), "every job done", 40)
    stored = await count_stored(nc, "fq.job.>")
    events = await collect_events(nc, "fq.job.>", until=lambda b: len(b) >= stored, timeout=20)
    by_kind: dict[str, Counter[str]] = {}
    started: dict[str, datetime] = {}
    for event in events:
        _, _, _, job_id, kind = event["_subject"].split(".")
        by_kind.setdefault(kind, Counter())[job_id] += 1
        if kind == "started":
            started[job_id] = at(event)

    for kind in ("scheduled", "released", "started", "succeeded"):
        counts = by_kind.get(kind, Counter())
        assert set(counts) == set(due), f"{kind}: {len(set(due) - set(counts))} jobs missing"
        assert set(counts.values()) == {1}, f"{kind} more than once: {counts.most_common(3)}"
    late = {job_id: (started[job_id] - run_at) for job_id, run_at in due.items()}
    early = {j: t for j, t in late.items() if t < timedelta(0)}
    too_late = {j: t for j, t in late.items() if t > ON_TIME}
    print("\n" + lateness_report(name, [t.total_seconds() * 1000 for t in late.values()]))
    assert not early, f"{len(early)} jobs started early, e.g. {list(early.items())[:3]}"
    assert not too_late, f"{len(too_late)} jobs started late, e.g. {list(too_late.items())[:3]}"


async def when(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    await wait_until(check, bool, timeout=timeout, what=what)


@pytest.mark.timeout(60)
async def test_a_thousand_delayed_jobs_start_on_time_across_a_scheduler_crash(
    start: StartService, nc: Client, event_log: EventLog
) -> None:
    """1,000 jobs due over ~20 s; the scheduler is killed (-9) while it relays the second
    half and restarted: every job is released and started once, none early, none late."""
    start("worker", FQ_WORKER_CONCURRENCY="64")
    scheduler = start("scheduler", FQ_LOG_LEVEL="DEBUG")
    await services_ready(nc)
    t0 = utcnow()

    first_half = await schedule_many(event_log, t0, 500, first=2, last=20)
    await when(lambda: relay_idle(nc), "first half relayed")
    await when(lambda: started_at_least(nc, 50), "50 jobs started")
    second = asyncio.create_task(schedule_many(event_log, t0, 500, first=11, last=20))
    await when(lambda: stored_at_least(nc, "fq.job.*.*.scheduled", 750), "half of the rest")
    scheduler.kill()  # mid-relay: whatever it held unacked is redelivered to its successor
    restarted = start("scheduler", FQ_LOG_LEVEL="DEBUG")
    second_half = await second

    await check_every_job_ran_once_on_time(nc, first_half | second_half, "crash")
    print(
        f"timers armed by the killed scheduler / its successor: "
        f"{armed_count(scheduler)} / {armed_count(restarted)}"
    )
    assert restarted.alive(), restarted.log()


@pytest.mark.timeout(60)
async def test_two_schedulers_release_each_job_once_and_lose_none_when_one_dies(
    start: StartService, nc: Client, event_log: EventLog
) -> None:
    start("worker", FQ_WORKER_CONCURRENCY="64")
    schedulers = [start("scheduler", FQ_LOG_LEVEL="DEBUG") for _ in range(2)]
    await services_ready(nc)
    t0 = utcnow()

    first_half = await schedule_many(event_log, t0, 200, first=2, last=14)
    await when(lambda: relay_idle(nc), "first half relayed")
    armed_by = [armed_count(s) for s in schedulers]
    second = asyncio.create_task(schedule_many(event_log, t0, 200, first=10, last=14))
    await when(lambda: stored_at_least(nc, "fq.job.*.*.scheduled", 300), "half of the rest")
    schedulers[0].kill()
    second_half = await second

    await check_every_job_ran_once_on_time(nc, first_half | second_half, "two schedulers")
    print(f"first half armed per scheduler: {armed_by}")
    assert schedulers[1].alive(), schedulers[1].log()


async def pulling(nc: Client, consumer: str) -> bool:
    """Whether some process has a pull request waiting on ``consumer`` (it is ready)."""
    try:
        info = await nc.jetstream().consumer_info(EVENT_STREAM, consumer)
    except nats.js.errors.NotFoundError:
        return False
    return (info.num_waiting or 0) > 0


async def services_ready(nc: Client) -> None:
    """Wait until a scheduler and a worker pull: a job due in a second is not late because
    a process was still starting."""
    for consumer in (TIMER_CONSUMER, worker_consumer_name("default")):
        await wait_until(
            functools.partial(pulling, nc, consumer), bool, timeout=30, what=f"{consumer} pulls"
        )


async def started_at_least(nc: Client, count: int) -> bool:
    return await count_stored(nc, "fq.job.*.*.started") >= count


async def stored_at_least(nc: Client, subject: str, count: int) -> bool:
    return await count_stored(nc, subject) >= count


def armed_count(scheduler: ServiceProcess) -> int:
    return scheduler.log().count("armed fq.timer.")
