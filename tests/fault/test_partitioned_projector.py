"""The jobs projection split across two projector processes (FQ_PROJECTOR_PARTITIONS=2) on
one SQLite store: the store ends equal to a fresh one-partition fold of the log (jobs,
timelines and the aggregates both partitions write), also when one partition's projector is
SIGKILLed mid-stream and restarted; and a status read right after a submit never 404s."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.domain.partition import owner
from ferrisqueue.settings import Settings
from ferrisqueue.store import queries
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.fault.system import consuming
from tests.support.history import History, verify
from tests.support.procs import ServiceProcess
from tests.support.refold import compare_with, rebuild
from tests.support.waits import wait_until

pytestmark = pytest.mark.fault

JOBS = 120
BATCH = "25"
"""Small bursts: many transactions, so a kill lands between and inside them."""


def partition(start: StartService, index: int) -> ServiceProcess:
    return start(
        "projections",
        FQ_PROJECTOR_PARTITIONS="2",
        FQ_PROJECTOR_PARTITION=str(index),
        FQ_PROJECTOR_BATCH=BATCH,
    )


def checkpoints(store: Engine) -> dict[str, int]:
    with Session(store) as session:
        return {row.name: row.position for row in queries.checkpoints(session)}


async def produce(producer: Producer, count: int) -> list[str]:
    job_ids = []
    for n in range(0, count, 10):
        ops = await asyncio.gather(
            *(
                producer.submit(f"job-{i}", {"type": "echo", "payload": {"i": i}})
                for i in range(n, n + 10)
            )
        )
        job_ids += [op.job_id for op in ops if op.job_id is not None]
    return job_ids


async def assert_equal_to_a_rebuild(
    nc: Client, history: History, store: Engine, settings: Settings, folder: Path
) -> None:
    verdict = await verify(nc, history, store)  # every row and timeline equals the log's fold
    verdict.assert_ok()
    assert verdict.outcomes == {"completed": JOBS}
    positions = checkpoints(store)
    assert positions["jobs/0of2"] == positions["jobs/1of2"] == 3 * JOBS
    assert "jobs" not in positions
    fresh = await rebuild(settings, folder)
    try:
        result = compare_with(store, fresh)  # fq projections verify, plus the aggregates
    finally:
        fresh.dispose()
    assert result.jobs_compared == JOBS
    assert result.differences == []


@pytest.mark.timeout(60)
async def test_two_partitions_leave_the_store_equal_to_a_rebuild(
    start: StartService,
    nc: Client,
    producer: Producer,
    history: History,
    store: Engine,
    settings: Settings,
    gateway: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    start("worker", FQ_WORKER_ID="w1")
    await consuming(nc, waiting=1)
    partition(start, 0)
    partition(start, 1)

    job_ids = await produce(producer, JOBS)

    assert {owner(job, 2) for job in job_ids} == {0, 1}
    await assert_equal_to_a_rebuild(nc, history, store, settings, tmp_path)
    listed = {row["name"]: row for row in (await gateway.get("/projections")).json()}
    assert set(listed) == {"jobs/0of2", "jobs/1of2", "workers"}
    assert listed["jobs/0of2"]["lag_events"] == listed["jobs/1of2"]["lag_events"] == 0


@pytest.mark.timeout(60)
async def test_a_killed_partition_resumes_exactly_once(
    start: StartService,
    nc: Client,
    producer: Producer,
    history: History,
    store: Engine,
    settings: Settings,
    tmp_path: Path,
) -> None:
    start("worker", FQ_WORKER_ID="w1")
    await consuming(nc, waiting=1)
    partition(start, 0)
    doomed = partition(start, 1)
    producing = asyncio.create_task(produce(producer, JOBS))

    for threshold in (90, 200):  # partition 1's position at each kill
        await wait_until(
            lambda: asyncio.to_thread(checkpoints, store),
            lambda found, at=threshold: found.get("jobs/1of2", 0) >= at,
            timeout=30,
            what=f"partition 1 past event {threshold}",
        )
        doomed.kill()  # SIGKILL, by pid
        doomed = partition(start, 1)
    await producing

    await assert_equal_to_a_rebuild(nc, history, store, settings, tmp_path)


@pytest.mark.timeout(45)
async def test_a_status_read_right_after_a_submit_never_404s(
    start: StartService, nc: Client, gateway: httpx.AsyncClient
) -> None:
    start("worker", FQ_WORKER_ID="w1")
    await consuming(nc, waiting=1)
    partition(start, 0)
    partition(start, 1)
    for i in range(40):
        answer = await gateway.post("/jobs", json={"type": "echo", "payload": {"i": i}})
        assert answer.status_code == 202, answer.text
        status = await gateway.get(answer.json()["status_url"])
        assert status.status_code == 200, status.text
        assert status.json()["job_id"] == answer.json()["job_id"]
