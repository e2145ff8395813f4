"""A data_processing job in a real worker process: output file, result, progress events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nats.aio.client import Client

from ferrisqueue.domain.events import Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.log.eventlog import EventLog
from tests.conftest import StartService
from tests.support.waits import collect_events

pytestmark = pytest.mark.integration


async def test_a_data_processing_job_writes_its_aggregates_and_reports_progress(
    start: StartService, nc: Client, event_log: EventLog, tmp_path: Path
) -> None:
    root = tmp_path / "storage"
    (root / "in").mkdir(parents=True)
    # 60,000 rows: enough for several progress reports (they come every 5% at most).
    rows = "".join(f"{('red', 'green', 'blue')[i % 3]},{i % 10},{i}\n" for i in range(60_000))
    (root / "in/points.csv").write_text("colour,score,id\n" + rows)
    start("worker", FQ_STORAGE_ROOT=str(root))
    job_id = new_job_id()

    await event_log.append(
        Submitted(
            job_id=job_id,
            queue="default",
            at=utcnow(),
            type="data_processing",
            payload={
                "input": "in/points.csv",
                "output_format": "json",
                "filters": [{"column": "score", "op": "ge", "value": 5}],
                "group_by": ["colour"],
                "aggregations": [
                    {"fn": "count", "as": "n"},
                    {"fn": "sum", "column": "score"},
                    {"fn": "mean", "column": "score", "as": "mean"},
                    {"fn": "min", "column": "id"},
                    {"fn": "max", "column": "id"},
                ],
            },
        )
    )
    events = await collect_events(
        nc,
        f"fq.job.*.{job_id}.*",
        until=lambda b: any(e["event"] in ("succeeded", "failed") for e in b),
        timeout=30,
    )

    outcome = events[-1]
    assert outcome["event"] == "succeeded", outcome
    output = f"data/{job_id}.json"
    assert outcome["result"] == {
        "rows_read": 60_000,
        "rows_matched": 30_000,
        "groups": 3,
        "output": output,
    }
    # Scores 5..9 are kept; i % 3 and i % 10 repeat together every 30 rows. Groups come in
    # the order first seen: i = 5 is blue, 6 red, 7 green.
    assert json.loads((root / output).read_text()) == [
        {"colour": c, "n": 10_000, "sum_score": 70_000, "mean": 7.0, "min_id": lo, "max_id": hi}
        for c, lo, hi in (("blue", 5, 59_999), ("red", 6, 59_997), ("green", 7, 59_998))
    ]
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert len(fractions) >= 3, events
    assert fractions == sorted(fractions)
    assert 0 < min(fractions) <= max(fractions) <= 1
