"""Audit trails straight from the log, and rebuilding / replaying the read store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.events import Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from tests.conftest import StartService
from tests.integration.test_projector import (
    _checkpoint,
    _differences,
    read_store,
    snapshot,
    wait_caught_up,
)
from tests.support.procs import run_fq
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration


async def submit_many(log: EventLog, count: int, type: str = "echo") -> list[str]:
    ids = [new_job_id() for _ in range(count)]
    await asyncio.gather(
        *(log.append(Submitted(job_id=i, queue="default", at=utcnow(), type=type)) for i in ids)
    )
    return ids


async def test_job_events_endpoint_and_fq_audit_show_the_whole_trail(
    gateway: httpx.AsyncClient,
    start: StartService,
    nc: Client,
    settings: Settings,
    tmp_path: Path,
) -> None:
    start("worker")
    job_id = (await gateway.post("/jobs", json={"type": "fail"})).json()["job_id"]
    await collect_events(
        nc, f"fq.job.*.{job_id}.dead_lettered", until=lambda b: len(b) == 1, timeout=15
    )
    # A stray event after the end: recorded in the log, rejected by the fold.
    await nc.jetstream().publish(
        f"fq.job.default.{job_id}.started", b'{"attempt": 9, "worker": "ghost"}'
    )

    trail = (await gateway.get(f"/jobs/{job_id}/events")).json()
    printed = await run_fq(settings, tmp_path, "audit", job_id)
    as_json = await run_fq(settings, tmp_path, "audit", job_id, "--json")

    assert [e["event"] for e in trail] == [
        "submitted",
        "started",
        "failed",
        "dead_lettered",
        "started",
    ]
    assert trail[0]["actor"] == "anonymous"  # no authentication here: the stand-in caller
    assert trail[1]["actor"].startswith("worker:" + settings.worker_id.split("-")[0])
    assert trail[4]["actor"] == "nats:anonymous"  # the stray event, published over raw NATS
    assert [e["status_after"] for e in trail] == [
        "pending",
        "running",
        "failed",
        "failed",
        "failed",
    ]
    assert trail[4]["applied"] is False
    assert trail[4]["note"] == "started is not legal when the job is failed"
    assert printed.returncode == 0, printed.stderr
    assert "REJECTED: started is not legal when the job is failed" in printed.stdout
    assert [json.loads(line)["event"] for line in as_json.stdout.splitlines()] == [
        "submitted",
        "started",
        "failed",
        "dead_lettered",
        "started",
    ]
    assert (await gateway.get(f"/jobs/{new_job_id()}/events")).status_code == 404


async def test_projections_endpoint_reports_the_lag(
    gateway: httpx.AsyncClient, start: StartService, event_log: EventLog
) -> None:
    await submit_many(event_log, 5)  # no projector yet: 5 events behind

    behind = (await gateway.get("/projections")).json()
    start("projections")
    caught_up = await wait_until(
        lambda: gateway.get("/projections"),
        lambda r: r.json()[0]["lag_events"] == 0,
        timeout=20,
        what="the projection to catch up",
    )

    assert behind[0] == {
        "name": "jobs",
        "stream": "FQ_EVENTS",
        "position": 0,
        "last_applied_at": None,
        "stream_last_seq": 5,
        "lag_events": 5,
        "parked_events": 0,
        "lost_deliveries": 0,
        "checkpoint_moves": 0,
        "orphan_events": 0,
        "last_problem": None,
        "last_problem_at": None,
    }
    assert behind[1]["name"] == "workers" and behind[1]["stream"] == "FQ_WORKERS"
    assert caught_up.json()[0]["position"] == 5


@pytest.mark.slow
async def test_rebuild_into_a_fresh_store_equals_the_live_one(
    start: StartService, nc: Client, event_log: EventLog, settings: Settings, tmp_path: Path
) -> None:
    start("worker")
    start("projections")
    await submit_many(event_log, 900)
    await submit_many(event_log, 100, type="fail")
    engine = read_store(settings.effective_database_url)
    last = await wait_caught_up(engine, nc)
    fresh_url = f"sqlite:///{tmp_path / 'rebuilt.db'}"

    result = await run_fq(settings, tmp_path, "projections", "rebuild", "--database-url", fresh_url)

    assert result.returncode == 0, result.stderr
    assert f"stream sequence {last}" in result.stdout
    rebuilt = read_store(fresh_url)
    live_rows, live_timeline = snapshot(engine)
    rebuilt_rows, rebuilt_timeline = snapshot(rebuilt)
    assert last == 3100  # 3 events per job, and a dead letter after each of the 100 failures
    assert len(live_rows) == 1000 and len(live_timeline) == 3100
    assert _differences(live_rows, rebuilt_rows) == []
    assert _differences(live_timeline, rebuilt_timeline) == []
    consumers = [c.name for c in await nc.jetstream().consumers_info(EVENT_STREAM)]
    assert not [c for c in consumers if c.startswith("fq-rebuild-")], "temporary consumer left"


async def test_replay_until_a_time_builds_the_store_as_it_was_then(
    start: StartService, nc: Client, event_log: EventLog, settings: Settings, tmp_path: Path
) -> None:
    start("worker")
    early = await submit_many(event_log, 20)
    await collect_events(nc, "fq.job.*.*.succeeded", until=lambda b: len(b) == 20, timeout=20)
    then = (await nc.jetstream().stream_info(EVENT_STREAM)).state
    cut = utcnow()  # after every early event was stored, before any late one (same clock)
    late = await submit_many(event_log, 20)
    await collect_events(nc, "fq.job.*.*.succeeded", until=lambda b: len(b) == 40, timeout=20)
    replay_url = f"sqlite:///{tmp_path / 'replayed.db'}"

    result = await run_fq(
        settings, tmp_path, "replay", "--until", cut.isoformat(), "--database-url", replay_url
    )

    assert result.returncode == 0, result.stderr
    replayed = read_store(replay_url)
    rows, timeline = snapshot(replayed)
    assert sorted(r["job_id"] for r in rows) == sorted(early)
    assert not set(late) & {r["job_id"] for r in rows}
    assert all(r["status"] == "completed" for r in rows)
    assert await _checkpoint(replayed) == then.last_seq == len(timeline) == 60


async def test_rebuild_refuses_a_store_a_projector_is_running_on(
    start: StartService, settings: Settings, tmp_path: Path, event_log: EventLog
) -> None:
    projector = start("projections")
    await wait_until(
        lambda: _contains(projector.log(), "leading"),
        bool,
        timeout=20,
        what="the projector to lead",
    )

    result = await run_fq(settings, tmp_path, "projections", "rebuild")

    assert result.returncode == 2
    assert "a projector is running on this read store" in result.stderr


async def _contains(text: str, part: str) -> bool:
    return part in text
