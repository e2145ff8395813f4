"""Queue pause and resume, end to end: a real nats-server, gateway (uvicorn, authentication
on), two worker processes and the CLI.

A paused queue accepts jobs and starts none; each worker says when it holds the queue (its
log: ``queue <q> paused ...: holding``), which is the signal these tests wait on before they
submit. That nothing starts is observed for as long as a control job on another queue takes
to run on the same workers (proving they are alive and pulling); a resume then runs every
held job exactly once. A job running when the pause arrives finishes; a worker started while
its queue is paused stays paused; ``GET /queues`` and the queue's audit name who did what.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.principal import Scope
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from tests.conftest import StartService, ready_gateway
from tests.support.auth import bearer, make_key
from tests.support.procs import ServiceProcess, run_fq
from tests.support.waits import collect_events, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

QUEUE = "work"
CONTROL = "ctl"
QUEUES = f"{QUEUE},{CONTROL}"
JOBS = 8


@pytest.fixture
async def api(
    start: StartService, event_log: EventLog, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with authentication on, as a client that presents the key ``ops`` (every
    scope)."""
    key = await make_key(event_log, "ops", *Scope)
    process = start("gateway", FQ_AUTH="on")
    async with httpx.AsyncClient(
        base_url=str(settings.gateway_url), timeout=10, headers=bearer(key)
    ) as client:
        await ready_gateway(process, client)
        yield client


def _worker(start: StartService, worker_id: str) -> ServiceProcess:
    return start("worker", FQ_WORKER_ID=worker_id, FQ_WORKER_QUEUES=QUEUES)


async def _holding(*workers: ServiceProcess, times: int = 1) -> None:
    """Wait until each worker has logged, ``times`` times, that it holds the paused queue."""
    line = f"queue {QUEUE} paused by key:ops"

    async def counts() -> list[int]:
        for worker in workers:
            assert worker.alive(), worker.log()
        return [
            sum(1 for entry in w.log().splitlines() if line in entry and "holding" in entry)
            for w in workers
        ]

    await wait_until(counts, lambda c: min(c) >= times, timeout=20, what="workers holding")


async def _submit(
    api: httpx.AsyncClient, queue: str, job_type: str = "echo", **payload: object
) -> str:
    answer = await api.post("/jobs", json={"type": job_type, "queue": queue, "payload": payload})
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["job_id"]
    return job_id


async def _started_in_queue(nc: Client) -> list[str]:
    info = await nc.jetstream().stream_info(
        "FQ_EVENTS", subjects_filter=f"fq.job.{QUEUE}.*.started"
    )
    return sorted(info.state.subjects or {})


async def _control_job_runs(api: httpx.AsyncClient, nc: Client) -> None:
    job_id = await _submit(api, CONTROL)
    await collect_events(nc, f"fq.job.{CONTROL}.{job_id}.succeeded", until=bool, timeout=30)


async def test_a_paused_queue_starts_nothing_until_resumed_then_runs_each_job_once(
    api: httpx.AsyncClient, start: StartService, nc: Client, settings: Settings, tmp_path: Path
) -> None:
    workers = [_worker(start, "w1"), _worker(start, "w2")]
    await _control_job_runs(api, nc)  # both loops up before we pause

    paused = await api.post(f"/queues/{QUEUE}/pause", json={"reason": "maintenance"})
    await _holding(*workers)
    held = [await _submit(api, QUEUE) for _ in range(JOBS)]
    await _control_job_runs(api, nc)

    assert paused.status_code == 200 and paused.json()["state"] == "paused", paused.text
    assert await _started_in_queue(nc) == []
    statuses = [(await api.get(f"/jobs/{j}/status")).json()["status"] for j in held]
    assert statuses == ["pending"] * JOBS
    listed = {q["queue"]: q for q in (await api.get("/queues")).json()}
    assert listed[QUEUE]["state"] == "paused" and listed[QUEUE]["changed_by"] == "key:ops"

    key = api.headers["Authorization"].removeprefix("Bearer ")
    resumed = await run_fq(settings, tmp_path, "queue", "resume", QUEUE, FQ_API_KEY=key)
    assert resumed.returncode == 0, resumed.stderr
    done = await collect_events(
        nc, f"fq.job.{QUEUE}.*.succeeded", until=lambda b: len(b) >= JOBS, timeout=30
    )
    started = await collect_events(
        nc, f"fq.job.{QUEUE}.*.started", until=lambda b: len(b) >= JOBS, timeout=5
    )

    assert sorted(b["_subject"].split(".")[3] for b in done) == sorted(held)
    assert set(Counter(b["_subject"] for b in started).values()) == {1}
    assert json.loads(resumed.stdout)["state"] == "active"
    audit = (await api.get(f"/queues/{QUEUE}/events")).json()
    assert [(e["event"], e["actor"], e.get("reason")) for e in audit] == [
        ("paused", "key:ops", "maintenance"),
        ("resumed", "key:ops", None),
    ]
    printed = await run_fq(settings, tmp_path, "queue", "audit", QUEUE, FQ_API_KEY=key)
    assert [line.split()[2:4] for line in printed.stdout.splitlines()] == [
        ["paused", "key:ops"],
        ["resumed", "key:ops"],
    ]


async def test_a_job_running_when_the_pause_arrives_finishes(
    api: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    worker = _worker(start, "w1")
    job_id = await _submit(api, QUEUE, "sleep", seconds=1.5)
    await collect_events(nc, f"fq.job.{QUEUE}.{job_id}.started", until=bool, timeout=30)

    await api.post(f"/queues/{QUEUE}/pause")
    await _holding(worker)
    done = await collect_events(
        nc, f"fq.job.{QUEUE}.{job_id}.*", until=lambda b: len(b) >= 3, timeout=30
    )

    assert [b["_subject"].rsplit(".", 1)[1] for b in done] == ["submitted", "started", "succeeded"]


async def test_a_worker_started_while_its_queue_is_paused_stays_paused(
    api: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    first = _worker(start, "w1")
    await api.post(f"/queues/{QUEUE}/pause")
    await _holding(first)
    assert first.terminate() == 0

    restarted = _worker(start, "w1-again")
    await _holding(restarted)
    job_id = await _submit(api, QUEUE)
    await _control_job_runs(api, nc)

    assert await _started_in_queue(nc) == []
    await api.post(f"/queues/{QUEUE}/resume")
    await collect_events(nc, f"fq.job.{QUEUE}.{job_id}.succeeded", until=bool, timeout=30)
