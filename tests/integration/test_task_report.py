"""A report job on a real worker counts what a real projector put in the read store."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pypdf
import pytest
from nats.aio.client import Client
from sqlalchemy import func
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from ferrisqueue.domain.events import Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from ferrisqueue.store.db import make_engine
from ferrisqueue.store.models import JobRow
from tests.conftest import StartService
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration


async def submit(log: EventLog, type_: str, payload: dict[str, Any]) -> str:
    job_id = new_job_id()
    await log.append(
        Submitted(job_id=job_id, queue="default", at=utcnow(), type=type_, payload=payload)
    )
    return job_id


async def test_report_job_writes_files_with_the_numbers_of_the_read_store(
    start: StartService, nc: Client, event_log: EventLog, settings: Settings, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    start("worker", FQ_STORAGE_ROOT=str(storage))
    start("projections")
    since = utcnow()
    job_ids = [await submit(event_log, "echo", {"n": n}) for n in range(3)]
    job_ids += [await submit(event_log, "fail", {"message": "disk <full>"}) for _ in range(2)]
    await collect_events(
        nc,
        "fq.job.default.*.*",
        until=lambda b: (
            {e["job_id"] for e in b if e["event"] in ("succeeded", "failed")} >= set(job_ids)
        ),
        timeout=20,
    )
    engine = make_engine(settings.effective_database_url)

    async def finished_in_store() -> int:
        try:
            with Session(engine) as session:
                query = select(func.count()).where(col(JobRow.finished_at).is_not(None))
                return session.exec(query).one()
        except OperationalError:  # the projector has not created the tables yet
            return -1

    try:
        await wait_until(finished_in_store, lambda n: n == 5, timeout=20, what="5 jobs projected")
    finally:
        engine.dispose()
    until = utcnow()  # the report job itself is created after the period

    report_id = await submit(
        event_log,
        "report",
        {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "formats": ["html", "csv", "pdf"],
        },
    )
    events = await collect_events(
        nc,
        f"fq.job.default.{report_id}.*",
        until=lambda b: any(e["event"] in ("succeeded", "failed") for e in b),
        timeout=20,
    )

    outcome = events[-1]
    assert outcome["event"] == "succeeded", outcome
    result = outcome["result"]
    assert result["totals"] == {"jobs": 5, "completed": 3, "failed": 2}
    assert result["artifacts"] == {
        "html": f"reports/{report_id}.html",
        "csv": f"reports/{report_id}.csv",
        "pdf": f"reports/{report_id}.pdf",
    }
    assert any(e["event"] == "progress" for e in events)

    page = (storage / result["artifacts"]["html"]).read_text()
    assert 'id="total-jobs"><b>5</b>' in page
    assert "disk &lt;full&gt;" in page

    table = list(csv.DictReader(io.StringIO((storage / result["artifacts"]["csv"]).read_text())))
    by_type_status = {
        (r["type"], r["status"]): int(r["value"]) for r in table if r["section"] == "by_type_status"
    }
    assert by_type_status["echo", "completed"] == 3
    assert by_type_status["fail", "failed"] == 2
    reasons = [(r["reason"], r["value"]) for r in table if r["section"] == "failure_reasons"]
    assert reasons == [("disk <full>", "2")]
    waits = {r["metric"]: r["value"] for r in table if r["type"] == "*"}
    assert waits["wait_count"] == "5" and waits["run_count"] == "5"
    assert 0 <= float(waits["wait_p50"]) <= float(waits["wait_p99"]) < 20

    pdf = (storage / result["artifacts"]["pdf"]).read_bytes()
    assert pdf.startswith(b"%PDF")
    text = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "disk <full>" in text
