"""A worker SIGKILLed while it runs jobs of a concurrency-limited key: the slots it held come
back (their leases expire with its jobs' leases, and a redelivered job takes its own slot
again), every job finishes exactly once in the read store, and no more jobs of the key than
the limit ran at once on the live workers."""

from __future__ import annotations

import time

import httpx
import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.states import JobStatus
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.slots import SlotBook
from ferrisqueue.settings import Settings
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.fault.system import by, consuming, starts, unfinished_on
from tests.support.history import History, verify
from tests.support.limits import most_running_at_once
from tests.support.procs import ServiceProcess
from tests.support.waits import wait_until

pytestmark = pytest.mark.fault

JOBS = 12
LIMIT = 2
JOB = {"type": "sleep", "payload": {"seconds": 0.5}, "concurrency_key": "acme"}


async def _limits_known(*workers: ServiceProcess) -> None:
    async def counts() -> list[int]:
        return [w.log().count("queue default limits set by") for w in workers]

    await wait_until(counts, lambda c: min(c) >= 1, timeout=20, what="workers limited")


@pytest.mark.timeout(60)
async def test_a_killed_workers_slots_come_back_and_every_limited_job_runs_once(
    start: StartService,
    nc: Client,
    gateway: httpx.AsyncClient,
    producer: Producer,
    history: History,
    store: Engine,
    settings: Settings,
) -> None:
    start("projections")
    doomed = start("worker", FQ_WORKER_ID="doomed", FQ_WORKER_CONCURRENCY="4")
    rescuer = start("worker", FQ_WORKER_ID="rescuer", FQ_WORKER_CONCURRENCY="4")
    await consuming(nc, waiting=2)
    answer = await gateway.put("/queues/default/limits", json={"key_concurrency": LIMIT})
    assert answer.status_code == 200, answer.text
    await _limits_known(doomed, rescuer)
    for n in range(JOBS):
        await producer.submit(f"acme-{n}", JOB)
    await starts(nc, by("doomed", 1))  # it holds a slot of the key: it dies mid-job

    doomed.kill()
    history.worker_gone("doomed")
    verdict = await verify(nc, history, store)

    verdict.assert_ok()
    assert verdict.observed is not None
    assert verdict.outcomes == {"completed": JOBS}
    assert most_running_at_once(verdict.observed) == {"": LIMIT}
    rescued = [t for t in verdict.observed.jobs.values() if unfinished_on(t, "doomed")]
    assert rescued, "the kill hit no running job"
    for trace in rescued:
        state = trace.state
        assert state is not None and state.status is JobStatus.COMPLETED
        assert state.attempts == 2 and state.worker == "rescuer"
    assert verdict.runs_per_job == {1: JOBS - len(rescued), 2: len(rescued)}
    # Every slot came back: the table holds no live lease once the jobs are done.
    table = await SlotBook(NatsLog.for_settings(nc, settings)).holders("q.default.slots.acme")
    assert [h for h, until in table.items() if until > time.time()] == []
