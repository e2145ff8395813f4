"""The ``report`` task: nearest-rank percentiles, statistics of a period read from a real
SQLite store, and HTML / CSV / PDF files that show the same numbers."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pypdf
import pytest
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.domain.events import BaseEvent, Failed, Started, Submitted, Succeeded, encode_event
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.errors import Permanent
from ferrisqueue.jobtypes import report as contract
from ferrisqueue.settings import Settings
from ferrisqueue.store.db import init_schema, make_engine
from projections import jobs
from worker.context import JobContext
from worker.registry import InvalidPayload, TaskRegistry
from worker.reporting import ALL_TYPES, QueueStats, compute_stats, percentile, render_pdf
from worker.storage import OutsideStorageRoot
from worker.tasks import report

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SINCE, UNTIL = T0, T0 + timedelta(seconds=100)
SCRIPT = "<script>alert(1)</script>"


# --- Percentiles ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        # Rank ceil(p/100 * n), 1-based, over the sorted values.
        ([15, 20, 35, 40, 50], 5, 15),  # rank ceil(0.25) = 1
        ([15, 20, 35, 40, 50], 30, 20),  # rank ceil(1.5) = 2
        ([15, 20, 35, 40, 50], 40, 20),  # rank ceil(2.0) = 2: exactly on a rank
        ([15, 20, 35, 40, 50], 50, 35),  # rank ceil(2.5) = 3
        ([15, 20, 35, 40, 50], 95, 50),  # rank ceil(4.75) = 5
        ([15, 20, 35, 40, 50], 100, 50),
        (list(range(1, 101)), 50, 50),
        (list(range(1, 101)), 95, 95),
        (list(range(1, 101)), 99, 99),
        ([7.5], 99, 7.5),
        ([1, 2], 50, 1),  # never interpolated: 1, not 1.5
    ],
)
def test_percentile_is_the_nearest_rank(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == expected


def test_percentile_of_no_values_is_none_and_p_must_be_in_range() -> None:
    assert percentile([], 50) is None
    for bad in (0, -1, 100.5):
        with pytest.raises(ValueError, match="percentile"):
            percentile([1.0], bad)


# --- A read store with known jobs ----------------------------------------------------------


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job_events(
    job_id: str,
    type_: str,
    created: float,
    *,
    wait: float | None = None,
    run: float | None = None,
    error: str | None = None,
    queue: str = "default",
) -> list[BaseEvent]:
    """A job created at ``T0 + created``, started ``wait`` s later, ending ``run`` s after."""
    ids = {"job_id": job_id, "queue": queue}
    events: list[BaseEvent] = [Submitted(**ids, at=at(created), type=type_)]
    if wait is None:
        return events
    started = created + wait
    events.append(Started(**ids, at=at(started), attempt=1, worker="w"))
    if run is None:
        return events
    end = at(started + run)
    if error is None:
        events.append(Succeeded(**ids, at=end, attempt=1, result=None, duration_ms=run * 1000))
    else:
        events.append(Failed(**ids, at=end, attempt=1, error=error, error_type="Permanent"))
    return events


def period_log() -> list[BaseEvent]:
    return [
        *job_events("echo-a", "echo", 0, wait=1, run=2),
        *job_events("echo-b", "echo", 10, wait=2, run=4),
        *job_events("echo-c", "echo", 20, wait=4, run=8),
        *job_events("fail-a", "fail", 30, wait=1, run=0.5, error="boom\nTraceback: ..."),
        *job_events("fail-b", "fail", 40, wait=3, run=1.5, error="boom"),
        *job_events("fail-c", "fail", 50, wait=5, run=1, error=SCRIPT),
        *job_events("echo-pending", "echo", 60),
        *job_events("echo-running", "echo", 70, wait=6),
        # Outside [SINCE, UNTIL): created before, and exactly at the (exclusive) end.
        *job_events("echo-before", "echo", -1, wait=100, run=100),
        *job_events("echo-at-end", "echo", 100, wait=100, run=100),
        # Another queue, in the period.
        *job_events("other-a", "sleep", 80, wait=10, run=20, queue="other"),
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'read.db'}")
    init_schema(engine)
    stored = [
        StoredEvent.decode(seq, e.subject, encode_event(e), e.at)
        for seq, e in enumerate(period_log(), 1)
    ]
    with Session(engine) as session:
        jobs.apply_batch(session, stored)
    yield engine
    engine.dispose()


def stats_of(engine: Engine, queues: list[str] | None = None) -> QueueStats:
    with Session(engine) as session:
        return compute_stats(
            report.load_job_facts(session, SINCE, UNTIL, queues),
            since=SINCE,
            until=UNTIL,
            queues=queues,
        )


def test_statistics_count_the_jobs_created_in_the_period(store: Engine) -> None:
    stats = stats_of(store, ["default"])

    assert stats.total == 8
    assert (stats.completed, stats.failed) == (3, 3)
    assert stats.by_status == {
        "pending": 1,
        "running": 1,
        "completed": 3,
        "failed": 3,
        "canceled": 0,
    }
    assert stats.by_type == {"echo": 5, "fail": 3}
    assert stats.by_type_status["echo", "completed"] == 3
    assert stats.by_type_status["echo", "running"] == 1
    assert stats.by_type_status["fail", "failed"] == 3
    assert stats.by_type_status["fail", "completed"] == 0
    # Grouped by first line: "boom\nTraceback" and "boom" are one reason.
    assert stats.failure_reasons == [("boom", 2), (SCRIPT, 1)]


def test_latency_percentiles_per_type_and_overall(store: Engine) -> None:
    latency = {row.type: row for row in stats_of(store, ["default"]).latency}

    assert list(latency) == ["echo", "fail", ALL_TYPES]
    echo, fail, overall = latency["echo"], latency["fail"], latency[ALL_TYPES]
    # echo waits [1, 2, 4, 6] (the running job waited too); runs [2, 4, 8] (finished only).
    assert echo.wait.count == 4
    assert echo.wait.percentiles == {50: 2.0, 95: 6.0, 99: 6.0}
    assert echo.run.count == 3
    assert echo.run.percentiles == {50: 4.0, 95: 8.0, 99: 8.0}
    # fail waits [1, 3, 5]; runs [0.5, 1, 1.5].
    assert fail.wait.percentiles == {50: 3.0, 95: 5.0, 99: 5.0}
    assert fail.run.percentiles == {50: 1.0, 95: 1.5, 99: 1.5}
    # All waits [1, 1, 2, 3, 4, 5, 6]: rank ceil(3.5) = 4 -> 3; all runs [0.5, 1, 1.5, 2, 4, 8].
    assert overall.wait.count == 7
    assert overall.wait.percentiles == {50: 3.0, 95: 6.0, 99: 6.0}
    assert overall.run.percentiles == {50: 1.5, 95: 8.0, 99: 8.0}


def test_without_a_queue_filter_every_queue_counts(store: Engine) -> None:
    stats = stats_of(store)

    assert stats.total == 9
    assert stats.by_type["sleep"] == 1
    assert stats.queues is None


def test_an_empty_period_has_zero_counts_and_no_percentiles(tmp_path: Path) -> None:
    stats = compute_stats([], since=SINCE, until=UNTIL)

    assert stats.total == 0 and stats.by_type == {} and stats.failure_reasons == []
    assert [row.type for row in stats.latency] == [ALL_TYPES]
    assert stats.latency[0].wait.percentiles == {50: None, 95: None, 99: None}
    assert render_pdf(stats, generated_at=T0).startswith(b"%PDF")


# --- The handler and its files --------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str | None]] = []

    async def __call__(self, fraction: float, message: str | None) -> None:
        self.calls.append((fraction, message))


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    root.mkdir()
    return root


@pytest.fixture
def registry(tmp_path: Path, storage: Path, store: Engine) -> TaskRegistry:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        var_dir=tmp_path / "var",
        database_url=store.url.render_as_string(hide_password=False),
        storage_root=storage,
    )
    tasks = TaskRegistry({"report": contract.JOB_TYPE})
    report.register(tasks, settings)
    return tasks


async def run_report(
    registry: TaskRegistry, payload: dict[str, Any], *, job_id: str = "job-1"
) -> tuple[dict[str, Any], Recorder]:
    recorder = Recorder()
    ctx = JobContext(
        job_id=job_id,
        queue="default",
        type="report",
        attempt=1,
        worker="test",
        _report=recorder,
        _loop=asyncio.get_running_loop(),
    )
    result: dict[str, Any] = await registry.runner("report")(ctx, payload)
    return result, recorder


PERIOD = {"since": SINCE.isoformat(), "until": UNTIL.isoformat(), "queues": ["default"]}


async def test_result_names_the_files_and_a_rerun_overwrites_them(
    registry: TaskRegistry, storage: Path
) -> None:
    payload = PERIOD | {"formats": ["html", "csv", "pdf", "csv"], "output_dir": "out//weekly/"}

    first, recorder = await run_report(registry, payload, job_id="job-7")
    again, _ = await run_report(registry, payload, job_id="job-7")

    assert first == again
    assert first["artifacts"] == {
        "html": "out/weekly/job-7.html",
        "csv": "out/weekly/job-7.csv",
        "pdf": "out/weekly/job-7.pdf",
    }
    assert first["totals"] == {"jobs": 8, "completed": 3, "failed": 3}
    assert first["queues"] == ["default"]
    assert datetime.fromisoformat(first["since"]) == SINCE
    assert datetime.fromisoformat(first["until"]) == UNTIL
    assert sorted(p.name for p in (storage / "out/weekly").iterdir()) == [
        "job-7.csv",
        "job-7.html",
        "job-7.pdf",
    ]  # no temporary file left behind
    assert [fraction for fraction, _ in recorder.calls] == [0.25, 0.5, 0.75, 1.0]


async def test_html_shows_the_numbers_and_escapes_error_text(
    registry: TaskRegistry, storage: Path
) -> None:
    result, _ = await run_report(registry, PERIOD)

    page = (storage / result["artifacts"]["html"]).read_text()
    assert result["artifacts"] == {"html": "reports/job-1.html"}  # the defaults
    assert re.search(r'id="total-jobs"><b>8</b>', page)
    assert re.search(r'id="total-completed"><b>3</b>', page)
    assert re.search(r'id="total-failed"><b>3</b>', page)
    assert SCRIPT not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert re.search(r"<td>echo</td><td class=\"n\">1</td><td class=\"n\">1</td>", page)
    assert '<td class="n">6.000</td>' in page  # echo's p95 wait


async def test_csv_reads_back_as_the_same_numbers(
    registry: TaskRegistry, storage: Path, store: Engine
) -> None:
    result, _ = await run_report(registry, PERIOD | {"formats": ["csv"]})

    with (storage / result["artifacts"]["csv"]).open(newline="") as file:
        rows = list(csv.DictReader(file))
    expected = stats_of(store, ["default"])

    def section(name: str) -> list[dict[str, str]]:
        return [row for row in rows if row["section"] == name]

    totals = {row["metric"]: int(row["value"]) for row in section("totals")}
    assert totals == {"jobs": 8, "completed": 3, "failed": 3}
    assert {r["status"]: int(r["value"]) for r in section("by_status")} == expected.by_status
    assert {r["type"]: int(r["value"]) for r in section("by_type")} == expected.by_type
    assert {
        (r["type"], r["status"]): int(r["value"]) for r in section("by_type_status")
    } == expected.by_type_status
    assert [(r["reason"], int(r["value"])) for r in section("failure_reasons")] == [
        ("boom", 2),
        (SCRIPT, 1),  # the CSV holds the text as it is: escaping is the reader's business
    ]
    latency = {(r["type"], r["metric"]): r["value"] for r in section("latency")}
    for row in expected.latency:
        assert int(latency[row.type, "wait_count"]) == row.wait.count
        for p, value in row.run.percentiles.items():
            assert float(latency[row.type, f"run_p{p}"]) == value
    assert float(latency[ALL_TYPES, "wait_p50"]) == 3.0
    period = {r["metric"]: r["value"] for r in section("period")}
    assert datetime.fromisoformat(period["since"]) == SINCE
    assert period["queues"] == "default"


async def test_pdf_holds_the_totals_and_survives_text_outside_latin1(
    registry: TaskRegistry, storage: Path, store: Engine
) -> None:
    with Session(store) as session:
        jobs.apply_batch(
            session,
            [
                StoredEvent.decode(1000 + n, e.subject, encode_event(e), e.at)
                for n, e in enumerate(
                    job_events("fail-u", "fail", 55, wait=1, run=1, error="échec ✗ 失败")
                )
            ],
        )

    result, _ = await run_report(registry, PERIOD | {"formats": ["pdf"]})

    data = (storage / result["artifacts"]["pdf"]).read_bytes()
    assert data.startswith(b"%PDF")
    text = "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages)
    assert "Totals" in text
    assert re.search(r"9\s+3\s+4", text)  # jobs, completed, failed
    assert "échec ? ??" in text  # Latin-1 kept, the rest replaced
    assert SCRIPT in text


# --- Refusals -------------------------------------------------------------------------------


async def test_output_outside_the_storage_root_is_refused(
    registry: TaskRegistry, storage: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidPayload, match="output_dir"):
        await run_report(registry, PERIOD | {"output_dir": "../escape"})
    (tmp_path / "elsewhere").mkdir()
    (storage / "link").symlink_to(tmp_path / "elsewhere")

    with pytest.raises(OutsideStorageRoot):
        await run_report(registry, PERIOD | {"output_dir": "link"})

    assert list((tmp_path / "elsewhere").iterdir()) == []


async def test_until_defaults_to_now_and_a_future_since_is_permanent(
    registry: TaskRegistry,
) -> None:
    before = datetime.now(UTC)
    result, _ = await run_report(registry, {"since": SINCE.isoformat()})
    assert before <= datetime.fromisoformat(result["until"]) <= datetime.now(UTC)
    # Every queue, and the period runs on to now: echo-at-end counts too (echo-before not).
    assert result["totals"]["jobs"] == 10
    assert result["queues"] is None

    future = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(Permanent, match="not before until"):
        await run_report(registry, {"since": future.isoformat()})


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "before until"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "before until"),
        ({"since": "2026-01-01T00:00:00"}, "timezone"),
        ({"since": "2026-01-01T00:00:00Z", "formats": ["docx"]}, "formats"),
        ({"since": "2026-01-01T00:00:00Z", "formats": []}, "formats"),
        ({"since": "2026-01-01T00:00:00Z", "queues": ["a.b"]}, "queues"),
        ({"since": "2026-01-01T00:00:00Z", "output_dir": "/tmp"}, "output_dir"),
        ({"since": "2026-01-01T00:00:00Z", "colour": "red"}, "colour"),
    ],
)
def test_contract_refuses_bad_payloads(payload: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        contract.ReportPayload.model_validate(payload)


def test_contract_accepts_any_timezone_and_drops_duplicate_formats() -> None:
    payload = contract.ReportPayload.model_validate(
        {
            "since": datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))).isoformat(),
            "formats": ["pdf", "pdf", "html"],
        }
    )

    assert payload.since == T0
    assert payload.formats == ["pdf", "html"]
    assert payload.until is None and payload.output_dir == "reports"
