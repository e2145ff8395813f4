"""Leases and MaxDeliver: a killed worker's job runs again elsewhere, and a job whose workers
keep dying is dead-lettered with its lineage instead of staying `running` for ever."""

from __future__ import annotations

import functools
import json

import httpx
import nats.js.errors
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.cron import CronSpec
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import ADVISORY_STREAM, DLQ_STREAM, EVENT_STREAM, SCHEDULE_STREAM
from ferrisqueue.log.cronbook import CronBook
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.settings import Settings
from scheduler.cron import TICK_CONSUMER
from scheduler.dead_letters import ROUTER_CONSUMER
from scheduler.timers import TIMER_CONSUMER
from tests.conftest import StartService
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration

SHORT_LEASE = {"FQ_ACK_WAIT": "1", "FQ_MAX_DELIVER": "2"}
LONG_JOB = {"type": "sleep", "payload": {"seconds": 30}}


async def started(nc: Client, job_id: str, count: int) -> list[dict[str, object]]:
    return await collect_events(
        nc, f"fq.job.*.{job_id}.started", until=lambda b: len(b) >= count, timeout=20
    )


async def test_a_killed_workers_job_runs_again_on_another_worker_as_attempt_2(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    first = start("worker", FQ_WORKER_ID="doomed", **SHORT_LEASE)
    job_id = (
        await gateway.post("/jobs", json={"type": "sleep", "payload": {"seconds": 2}})
    ).json()["job_id"]
    await started(nc, job_id, 1)

    first.kill()
    start("worker", FQ_WORKER_ID="rescuer", **SHORT_LEASE)
    done = await collect_events(
        nc, f"fq.job.*.{job_id}.succeeded", until=lambda b: len(b) == 1, timeout=20
    )

    attempts = await started(nc, job_id, 2)
    assert [(e["attempt"], e["worker"]) for e in attempts] == [(1, "doomed"), (2, "rescuer")]
    assert done[0]["attempt"] == 2


async def test_a_job_whose_workers_keep_dying_is_dead_lettered(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    start("scheduler")
    job_id = (await gateway.post("/jobs", json=LONG_JOB)).json()["job_id"]
    for attempt in (1, 2):
        worker = start("worker", FQ_WORKER_ID=f"w{attempt}", **SHORT_LEASE)
        await started(nc, job_id, attempt)
        worker.kill()
    last = start("worker", FQ_WORKER_ID="w3", **SHORT_LEASE)  # its pull request is waiting

    lettered = await collect_events(
        nc, f"fq.job.*.{job_id}.dead_lettered", until=lambda b: len(b) == 1, timeout=30
    )
    status = await wait_until(
        lambda: gateway.get(f"/jobs/{job_id}/status"),
        lambda r: r.json()["status"] == "failed",
        timeout=10,
        what="failed status",
    )

    assert "given up after 2 deliveries" in lettered[0]["reason"]
    assert status.json()["dead_lettered"] is True
    letter = await nc.jetstream().get_last_msg(DLQ_STREAM, f"fq.dlq.default.{job_id}")
    assert letter.headers is not None
    assert letter.headers["Fq-Deliveries"] == "2"
    assert letter.headers["Fq-Attempts"] == "2"
    assert letter.headers["Fq-Last-Worker"] == "w2"
    assert b'"sleep"' in (letter.data or b"")
    assert len(await started(nc, job_id, 2)) == 2, "the job ran a third time"
    assert last.alive()


MAX_DELIVERIES = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.FQ_EVENTS.fq-worker-default"


async def pulling(nc: Client, stream: str, consumer: str) -> bool:
    """Whether some process has a pull request waiting on ``consumer`` (its loop runs)."""
    try:
        info = await nc.jetstream().consumer_info(stream, consumer)
    except nats.js.errors.NotFoundError:
        return False
    return (info.num_waiting or 0) > 0


async def router_done_up_to(nc: Client, seq: int) -> bool:
    """Whether the router settled (acked or parked) every advisory up to ``seq``."""
    info = await nc.jetstream().consumer_info(ADVISORY_STREAM, ROUTER_CONSUMER)
    return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= seq


@pytest.mark.timeout(60)
async def test_a_malformed_advisory_is_parked_and_timers_and_cron_keep_running(
    start: StartService, nc: Client, settings: Settings, event_log: EventLog
) -> None:
    scheduler = start("scheduler")
    start("worker")
    for stream, consumer in (
        (ADVISORY_STREAM, ROUTER_CONSUMER),
        (EVENT_STREAM, TIMER_CONSUMER),
        (SCHEDULE_STREAM, TICK_CONSUMER),
    ):
        await wait_until(
            functools.partial(pulling, nc, stream, consumer),
            bool,
            timeout=30,
            what=f"{consumer} pulls",
        )

    # One advisory that is no JSON at all, one naming a message FQ_EVENTS does not hold
    # (reading it fails). Either used to escape the router and stop the whole scheduler.
    js = nc.jetstream()
    await js.publish(MAX_DELIVERIES, b"{not json", stream=ADVISORY_STREAM)
    last = await js.publish(
        MAX_DELIVERIES,
        json.dumps({"stream_seq": 10**9, "deliveries": 2}).encode(),
        stream=ADVISORY_STREAM,
    )
    await wait_until(
        functools.partial(router_done_up_to, nc, last.seq),
        bool,
        timeout=20,
        what="the router to settle the bad advisories",
    )

    # The timer relay still arms timers: a delayed job is released and runs.
    job_id = new_job_id()
    await js.publish(
        f"fq.job.default.{job_id}.scheduled", json.dumps({"type": "echo", "delay": 1}).encode()
    )
    released = await collect_events(
        nc, f"fq.job.*.{job_id}.released", until=lambda b: len(b) == 1, timeout=20
    )
    succeeded = await collect_events(
        nc, f"fq.job.*.{job_id}.succeeded", until=lambda b: len(b) == 1, timeout=20
    )
    # Cron still turns ticks into jobs.
    await CronBook.for_settings(NatsLog(nc), settings).put(
        CronSpec.model_validate(
            {"name": "after-bad-advisory", "schedule": "@every 1s", "job": {"type": "echo"}}
        ),
        actor="cli:tester@test-host",
    )
    cron_jobs = await collect_events(
        nc,
        "fq.job.*.*.submitted",
        until=lambda b: any(e.get("actor") == "cron:after-bad-advisory" for e in b),
        timeout=20,
    )

    assert released[0]["attempt"] == 0 and succeeded[0]["attempt"] == 1
    assert cron_jobs
    assert scheduler.alive(), scheduler.log()
    assert scheduler.log().count("parked") == 2, scheduler.log()
    # Parked, not lost: both stay in FQ_ADVISORIES for an operator to read.
    assert (await js.stream_info(ADVISORY_STREAM)).state.messages == 2
