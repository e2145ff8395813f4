"""Cleanup jobs run by a real worker process: files under the storage root, and the read
store the worker is configured with."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from sqlmodel import Session, select

from ferrisqueue.domain.events import Started, Submitted, Succeeded, encode_event, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from ferrisqueue.store.db import init_schema, make_engine
from ferrisqueue.store.models import JobRow
from projections import jobs
from tests.conftest import StartService
from tests.support.waits import collect_events

pytestmark = pytest.mark.integration

HOUR = 3600


def make(path: Path, *, age: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    then = time.time() - age
    os.utime(path, (then, then))


def remaining(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


async def run_job(event_log: EventLog, nc: Client, payload: dict[str, Any]) -> dict[str, Any]:
    """Submit a cleanup job and return its succeeded or failed event."""
    job_id = new_job_id()
    await event_log.append(
        Submitted(job_id=job_id, queue="default", at=utcnow(), type="cleanup", payload=payload)
    )
    events = await collect_events(
        nc,
        f"fq.job.*.{job_id}.*",
        until=lambda bodies: any(b["event"] in ("succeeded", "failed") for b in bodies),
        timeout=30,
    )
    return next(b for b in events if b["event"] in ("succeeded", "failed"))


async def test_worker_deletes_old_files_under_the_storage_root(
    start: StartService, event_log: EventLog, nc: Client, tmp_path: Path
) -> None:
    root = tmp_path / "storage"
    make(root / "uploads" / "old.tmp", age=2 * HOUR)
    make(root / "uploads" / "nested" / "old.tmp", age=2 * HOUR)
    make(root / "uploads" / "fresh.tmp", age=0)
    make(root / "uploads" / "old.keep", age=2 * HOUR)
    start("worker", FQ_STORAGE_ROOT=str(root))

    final = await run_job(
        event_log,
        nc,
        {"root_subdir": "uploads", "pattern": "**/*.tmp", "older_than_seconds": HOUR},
    )

    assert final["event"] == "succeeded", final
    assert remaining(root) == ["uploads/fresh.tmp", "uploads/old.keep"]
    assert final["result"]["deleted"] == 2
    assert final["result"]["bytes_freed"] == 2
    assert final["result"]["dry_run"] is False


async def test_worker_refuses_a_cleanup_outside_the_storage_root(
    start: StartService, event_log: EventLog, nc: Client, tmp_path: Path
) -> None:
    root = tmp_path / "storage"
    root.mkdir()
    make(tmp_path / "outside" / "victim.tmp", age=2 * HOUR)
    start("worker", FQ_STORAGE_ROOT=str(root))

    final = await run_job(event_log, nc, {"root_subdir": "../outside", "older_than_seconds": 0})

    assert final["event"] == "failed"
    assert final["error_type"].startswith("permanent:")
    assert "inside the storage root" in final["error"]
    assert (tmp_path / "outside" / "victim.tmp").exists()


async def test_worker_purges_old_finished_jobs_from_its_read_store(
    start: StartService, event_log: EventLog, nc: Client, settings: Settings
) -> None:
    """The worker reads FQ_DATABASE_URL: the store it purges is the one the projector fills
    (filled directly here, as the projector would, with jobs that finished long ago)."""
    old = utcnow() - timedelta(days=400)
    events = []
    for job_id in ("old-1", "old-2"):
        job = {"job_id": job_id, "queue": "default"}
        events += [
            Submitted(**job, at=old, type="echo"),
            Started(**job, at=old, attempt=1, worker="w"),
            Succeeded(**job, at=old, attempt=1, duration_ms=1.0),
        ]
    engine = make_engine(settings.effective_database_url)
    init_schema(engine)
    with Session(engine) as session:
        jobs.apply_batch(
            session,
            [
                StoredEvent.decode(seq, e.subject, encode_event(e), e.at)
                for seq, e in enumerate(events, 1)
            ],
        )
    start("worker")

    final = await run_job(event_log, nc, {"target": "read_store", "older_than_seconds": 24 * HOUR})

    assert final["event"] == "succeeded", final
    assert (final["result"]["deleted"], final["result"]["events_deleted"]) == (2, 6)
    try:
        with Session(engine) as session:
            assert session.exec(select(JobRow)).all() == []
    finally:
        engine.dispose()
