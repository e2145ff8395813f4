"""Divergence between the read store and the log is visible to an operator: ``fq projections
verify`` compares the store with a fresh fold of the log and names what differs, and
``GET /projections`` reports what the projector noticed (events for jobs never created)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client
from sqlalchemy import delete, update
from sqlmodel import Session

from ferrisqueue.domain.events import Started, Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from ferrisqueue.store.models import JobEventRow, JobRow
from projections.runner import Projector
from tests.conftest import StartService
from tests.integration.test_projector import read_store, wait_caught_up
from tests.support.procs import run_fq
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration


async def test_verify_names_the_jobs_whose_rows_differ_from_the_log(
    start: StartService, nc: Client, settings: Settings, event_log: EventLog, tmp_path: Path
) -> None:
    start("worker")
    start("projections")
    ids = [new_job_id() for _ in range(3)]
    for job_id in ids:
        await event_log.append(Submitted(job_id=job_id, queue="default", at=utcnow(), type="echo"))
    engine = read_store(settings.effective_database_url)
    await wait_caught_up(engine, nc)

    clean = await run_fq(settings, tmp_path, "projections", "verify")
    # What issue 13 left behind: a skipped `succeeded` (the job stays running) and a
    # timeline without it.
    with Session(engine) as session:
        session.execute(update(JobRow).where(JobRow.job_id == ids[0]).values(status="running"))
        session.execute(
            delete(JobEventRow).where(JobEventRow.job_id == ids[1], JobEventRow.event == "started")
        )
        session.commit()
    tampered = await run_fq(settings, tmp_path, "projections", "verify")
    engine.dispose()

    assert clean.returncode == 0, clean.stderr
    assert "compared 3 jobs up to stream sequence 9" in clean.stdout
    assert clean.stdout.rstrip().endswith("0 differences")
    assert tampered.returncode == 1, tampered.stderr
    assert f"job {ids[0]}: status is 'running' in the live store, 'completed' in the log" in (
        tampered.stdout
    )
    assert f"job {ids[1]}: events never applied at [" in tampered.stdout
    assert tampered.stdout.rstrip().endswith("2 differences")


async def test_an_event_for_a_job_never_created_shows_in_get_projections(
    start: StartService, event_log: EventLog, gateway: httpx.AsyncClient
) -> None:
    start("projections")
    stray = Started(job_id=new_job_id(), queue="default", at=utcnow(), attempt=1, worker="w")
    seq = await event_log.append(stray)

    async def jobs_projection() -> dict[str, object]:
        found: list[dict[str, object]] = (await gateway.get("/projections")).json()
        return next(p for p in found if p["name"] == "jobs")

    status = await wait_until(
        jobs_projection, lambda p: p["position"] == seq, timeout=20, what="the stray applied"
    )
    assert (status["orphan_events"], status["lost_deliveries"], status["checkpoint_moves"]) == (
        1,
        0,
        0,
    )
    assert f"the first at sequence {seq} ({stray.subject})" in str(status["last_problem"])


async def test_a_fold_that_stops_short_of_the_log_end_finishes(
    event_log: EventLog, settings: Settings, tmp_path: Path
) -> None:
    """What verify does when the log has moved past the live checkpoint (a projector behind,
    jobs still running): its receiver fills the pipeline with later bursts and waits to hand
    over one more as the last wanted batch is applied. Ending must not wait on that full
    pipeline: it once did, for ever (the consumer, no longer pulled, was gone 60 s later)."""
    for _ in range(12):
        await event_log.append(
            Submitted(job_id=new_job_id(), queue="default", at=utcnow(), type="echo")
        )
    scratch = settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'fold.db'}", "projector_batch": 1}
    )

    reached = await asyncio.wait_for(Projector(scratch).catch_up(up_to=2), 20)

    assert reached == 2
    assert not [name for name in await event_log.backlogs(EVENT_STREAM) if "rebuild" in name]
