"""Workers: sharing a queue, surviving poison input, stopping cleanly."""

from __future__ import annotations

import os
import uuid
from collections import Counter

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.events import Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.log.eventlog import EventLog
from tests.conftest import StartService
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration


async def test_two_worker_processes_share_200_jobs_and_run_each_once(
    start: StartService, nc: Client, event_log: EventLog
) -> None:
    start("worker", FQ_WORKER_ID="w1")
    start("worker", FQ_WORKER_ID="w2")
    # Both are consuming once each has a pull request waiting on the queue's consumer.
    await wait_until(
        lambda: nc.jetstream().consumer_info("FQ_EVENTS", "fq-worker-default"),
        lambda info: info.num_waiting >= 2,
        timeout=30,
        what="both workers' first pull requests",
    )
    log = event_log
    job_ids = {new_job_id() for _ in range(200)}
    for job_id in job_ids:
        await log.append(
            Submitted(
                job_id=job_id, queue="default", at=utcnow(), type="sleep", payload={"seconds": 0.01}
            )
        )

    succeeded = await collect_events(
        nc,
        "fq.job.default.*.succeeded",
        until=lambda b: len({e["job_id"] for e in b}) >= 200,
        timeout=60,
    )
    started = await collect_events(
        nc, "fq.job.default.*.started", until=lambda b: len(b) >= 200, timeout=5
    )

    assert {e["job_id"] for e in succeeded} == job_ids
    assert len(succeeded) == 200, "a job succeeded twice"
    assert len(started) == 200, "a job was started twice"
    per_worker = Counter(e["worker"] for e in started)
    assert set(per_worker) == {"w1", "w2"}, per_worker
    assert all(e["attempt"] == 1 for e in started)


async def test_malformed_message_is_dead_lettered_and_the_worker_keeps_running(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    worker = start("worker")
    start("projections")
    poison = str(uuid.uuid4())
    await nc.jetstream().publish(f"fq.job.default.{poison}.submitted", b"{not json")

    good = (await gateway.post("/jobs", json={"type": "echo", "payload": {"ok": True}})).json()

    await collect_events(
        nc, f"fq.job.*.{good['job_id']}.succeeded", until=lambda b: len(b) == 1, timeout=15
    )
    status = await wait_until(
        lambda: gateway.get(f"/jobs/{poison}/status"),
        lambda r: r.status_code == 200 and r.json()["source"] == "read_store",
        timeout=15,
        what="the poison job in the read store",
    )
    assert status.json()["status"] == "failed"
    assert "not JSON" in status.json()["last_error"]
    assert worker.alive()
    info = await nc.jetstream().consumer_info("FQ_EVENTS", "fq-worker-default")
    assert info.num_ack_pending == 0, "the poison message is still held"
    assert info.num_redelivered == 0, "the poison message was delivered again"


async def test_unknown_job_type_fails_with_a_clear_error(
    gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    start("worker")
    accepted = (await gateway.post("/jobs", json={"type": "no_such_task"})).json()

    events = await collect_events(
        nc, f"fq.job.*.{accepted['job_id']}.failed", until=lambda b: len(b) == 1, timeout=15
    )

    assert "no task 'no_such_task'" in events[0]["error"]


async def test_worker_stops_on_sigterm_with_exit_code_0(
    start: StartService, nc: Client, event_log: EventLog
) -> None:
    worker = start("worker")
    # The worker is consuming once its durable consumer has a waiting pull request.
    await wait_until(
        lambda: nc.jetstream().consumer_info("FQ_EVENTS", "fq-worker-default"),
        lambda info: info.num_waiting >= 1,
        timeout=20,
        what="the worker's first fetch",
    )

    assert worker.terminate(timeout=10) == 0


@pytest.mark.timeout(60)
async def test_a_worker_lowers_its_own_priority_by_its_niceness(
    start: StartService, nc: Client, event_log: EventLog
) -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    default = start("worker", FQ_WORKER_ID="nice-default")
    zero = start("worker", FQ_WORKER_ID="nice-zero", FQ_WORKER_NICENESS="0")
    # Set at start, before the worker connects: once both pull, both have theirs.
    await wait_until(
        lambda: nc.jetstream().consumer_info("FQ_EVENTS", "fq-worker-default"),
        lambda info: info.num_waiting >= 2,
        timeout=30,
        what="both workers' first pull requests",
    )

    assert os.getpriority(os.PRIO_PROCESS, default.pid) == min(19, ours + 10)
    assert os.getpriority(os.PRIO_PROCESS, zero.pid) == ours
