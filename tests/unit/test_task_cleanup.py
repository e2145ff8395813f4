"""The cleanup task on real folders and a real read store: what is old and matches goes,
nothing outside the storage root is touched, symlinks are never followed."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from ferrisqueue.domain.events import (
    BaseEvent,
    Canceled,
    Failed,
    Started,
    Submitted,
    Succeeded,
    encode_event,
)
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.errors import Permanent
from ferrisqueue.jobtypes import load_job_types
from ferrisqueue.jobtypes.cleanup import CleanupPayload, CleanupResult
from ferrisqueue.settings import Settings
from ferrisqueue.store.db import init_schema, make_engine
from ferrisqueue.store.models import JobEventRow, JobRow
from projections import jobs
from worker.context import JobContext
from worker.registry import TaskRegistry
from worker.storage import OutsideStorageRoot
from worker.tasks import cleanup as task
from worker.tasks.cleanup import NotADirectory, cleanup, matches, pattern_parts

HOUR = 3600.0

Reports = list[tuple[float, str | None]]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "storage"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(tmp_path: Path, root: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        var_dir=tmp_path / "var",
        storage_root=root,
        database_url=f"sqlite:///{tmp_path / 'read.db'}",
    )


def context(reports: Reports) -> JobContext:
    async def report(fraction: float, message: str | None) -> None:
        reports.append((fraction, message))

    return JobContext(
        "job-cleanup", "default", "cleanup", 1, "test", report, asyncio.get_running_loop()
    )


async def run(settings: Settings, reports: Reports | None = None, **payload: Any) -> CleanupResult:
    """The handler as a worker calls it: in a thread, with a context whose loop is ours."""
    ctx = context(reports if reports is not None else [])
    return await asyncio.to_thread(cleanup, ctx, CleanupPayload(**payload), settings)


def make(path: Path, *, age: float = 0.0, size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def remaining(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


# --- Files ---------------------------------------------------------------------------------


async def test_old_files_are_deleted_and_new_ones_kept(settings: Settings, root: Path) -> None:
    make(root / "old.log", age=2 * HOUR, size=100)
    make(root / "new.log", age=60)

    result = await run(settings, older_than_seconds=HOUR)

    assert remaining(root) == ["new.log"]
    assert (result.matched, result.deleted, result.bytes_freed) == (1, 1, 100)
    assert result.dry_run is False
    assert result.truncated is False


async def test_glob_selects_names_and_double_star_recurses(settings: Settings, root: Path) -> None:
    for name in ("a.tmp", "a.log", "sub/b.tmp", "sub/deep/c.tmp", "sub/deep/c.log"):
        make(root / name, age=HOUR)

    top = await run(settings, pattern="*.tmp", older_than_seconds=0)
    assert top.deleted == 1
    assert remaining(root) == ["a.log", "sub/b.tmp", "sub/deep/c.log", "sub/deep/c.tmp"]

    below = await run(settings, pattern="**/*.tmp", older_than_seconds=0)
    assert below.deleted == 2
    assert remaining(root) == ["a.log", "sub/deep/c.log"]
    assert (root / "sub" / "deep").is_dir()  # folders are never deleted


async def test_root_subdir_limits_the_cleanup_to_that_folder(
    settings: Settings, root: Path
) -> None:
    make(root / "keep" / "x.tmp", age=HOUR)
    make(root / "tmp" / "x.tmp", age=HOUR)

    result = await run(settings, root_subdir="tmp", older_than_seconds=0)

    assert result.deleted == 1
    assert remaining(root) == ["keep/x.tmp"]


async def test_dry_run_counts_and_deletes_nothing(settings: Settings, root: Path) -> None:
    make(root / "a.tmp", age=HOUR, size=7)
    make(root / "b.tmp", age=HOUR, size=5)

    result = await run(settings, older_than_seconds=0, dry_run=True)

    assert remaining(root) == ["a.tmp", "b.tmp"]
    assert (result.matched, result.matched_bytes) == (2, 12)
    assert (result.deleted, result.bytes_freed) == (0, 0)
    assert result.dry_run is True


async def test_symlinks_pointing_outside_are_not_followed_and_not_deleted(
    settings: Settings, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    victim = make(outside / "victim.tmp", age=HOUR)
    make(outside / "nested" / "deep.tmp", age=HOUR)
    (root / "folder-link").symlink_to(outside, target_is_directory=True)
    (root / "file-link.tmp").symlink_to(victim)
    os.utime(root / "file-link.tmp", (0, 0), follow_symlinks=False)  # old, too

    result = await run(settings, pattern="**/*.tmp", older_than_seconds=0)

    assert victim.exists()
    assert (outside / "nested" / "deep.tmp").exists()
    assert (root / "file-link.tmp").is_symlink()
    assert (root / "folder-link").is_symlink()
    assert result.deleted == 0
    reasons = {s.path: s.reason for s in result.skipped}
    assert reasons == {
        "file-link.tmp": "symlink: not followed, not deleted",
        "folder-link": "symlink to a folder: not followed",
    }


@pytest.mark.parametrize(
    "payload",
    [
        {"root_subdir": "../outside"},
        {"root_subdir": "/etc"},
        {"pattern": "../outside/*"},
        {"pattern": "sub/../../outside/*"},
    ],
    ids=["subdir-dotdot", "subdir-absolute", "pattern-dotdot", "pattern-dotdot-nested"],
)
async def test_paths_outside_the_root_are_refused_permanently(
    settings: Settings, tmp_path: Path, payload: dict[str, Any]
) -> None:
    victim = make(tmp_path / "outside" / "victim.txt", age=HOUR)
    registry = TaskRegistry(load_job_types())
    task.register(registry, settings)

    with pytest.raises(Permanent, match="inside the storage root"):
        await registry.runner("cleanup")(
            context([]), {"older_than_seconds": 0, "pattern": "*", **payload}
        )

    assert victim.exists()


async def test_the_handler_refuses_dotdot_even_past_the_contract(
    settings: Settings, tmp_path: Path
) -> None:
    victim = make(tmp_path / "outside" / "victim.txt", age=HOUR)
    unchecked = CleanupPayload.model_construct(
        target="files",
        older_than_seconds=0,
        root_subdir="../outside",
        pattern="*",
        dry_run=False,
        max_files=10,
    )

    with pytest.raises(OutsideStorageRoot):
        await asyncio.to_thread(cleanup, context([]), unchecked, settings)

    assert victim.exists()


async def test_root_subdir_through_a_symlink_is_refused(
    settings: Settings, root: Path, tmp_path: Path
) -> None:
    victim = make(tmp_path / "outside" / "victim.txt", age=HOUR)
    inner = make(root / "real" / "inner.txt", age=HOUR)
    (root / "out-link").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "in-link").symlink_to(root / "real", target_is_directory=True)

    with pytest.raises(OutsideStorageRoot):
        await run(settings, root_subdir="out-link", older_than_seconds=0)
    with pytest.raises(NotADirectory, match="symlinks are not followed"):
        await run(settings, root_subdir="in-link", older_than_seconds=0)

    assert victim.exists()
    assert inner.exists()


async def test_max_files_caps_one_run_and_the_next_run_goes_on(
    settings: Settings, root: Path
) -> None:
    for n in range(5):
        make(root / f"f{n}.tmp", age=HOUR)

    first = await run(settings, older_than_seconds=0, max_files=2)
    assert (first.matched, first.deleted, first.truncated) == (2, 2, True)
    assert remaining(root) == ["f2.tmp", "f3.tmp", "f4.tmp"]

    second = await run(settings, older_than_seconds=0, max_files=3)
    assert (second.deleted, second.truncated) == (3, False)
    assert remaining(root) == []


async def test_progress_is_reported_while_deleting(
    settings: Settings, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task, "PROGRESS_EVERY", 2)
    for n in range(5):
        make(root / f"f{n}.tmp", age=HOUR)
    reports: Reports = []

    await run(settings, reports, older_than_seconds=0)

    assert [fraction for fraction, _ in reports] == [2 / 5, 4 / 5]
    assert reports[-1][1] == "deleted 4 of 5 files"


async def test_a_missing_folder_is_nothing_to_do(settings: Settings) -> None:
    result = await run(settings, root_subdir="not/there", older_than_seconds=0)

    assert (result.matched, result.deleted, result.skipped_total) == (0, 0, 0)


async def test_the_skipped_list_is_capped_but_counted(
    settings: Settings, root: Path, tmp_path: Path
) -> None:
    target = make(tmp_path / "target.txt")
    for n in range(105):
        (root / f"link{n:03d}").symlink_to(target)

    result = await run(settings, older_than_seconds=0)

    assert len(result.skipped) == 100
    assert result.skipped_total == 105
    assert result.skipped[0].path == "link000"


async def test_a_file_replaced_after_matching_is_left_alone(
    settings: Settings, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the walk and the unlink, the file is swapped for another (a new inode)."""
    old = make(root / "a.tmp", age=HOUR)
    real_delete = task._delete

    def swap_then_delete(*args: Any) -> tuple[int, int]:
        # Same name and age, another file (made before the old one goes: another inode).
        os.replace(make(root / "new.part", age=HOUR), old)
        return real_delete(*args)

    monkeypatch.setattr(task, "_delete", swap_then_delete)

    result = await run(settings, older_than_seconds=0)

    assert old.exists()
    assert result.deleted == 0
    assert [(s.path, s.reason) for s in result.skipped] == [
        ("a.tmp", "changed since it was matched")
    ]


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("a.tmp", "*.tmp", True),
        (".hidden.tmp", "*.tmp", True),
        ("sub/a.tmp", "*.tmp", False),
        ("sub/a.tmp", "**/*.tmp", True),
        ("a.tmp", "**/*.tmp", True),
        ("x/y/z/a.tmp", "x/**/a.tmp", True),
        ("x/a.tmp", "x/**/a.tmp", True),
        ("y/a.tmp", "x/**/a.tmp", False),
        ("x/y/a.log", "x/**", True),
        ("report-2.csv", "report-[0-9].csv", True),
    ],
)
def test_glob_semantics(path: str, pattern: str, expected: bool) -> None:
    assert matches(tuple(path.split("/")), pattern_parts(pattern)) is expected


# --- Read store ----------------------------------------------------------------------------

OLD = datetime(2026, 1, 1, tzinfo=UTC)


def job_events(job_id: str, outcome: str, at: datetime) -> list[BaseEvent]:
    job = {"job_id": job_id, "queue": "default"}
    submitted = Submitted(**job, at=at, type="echo")
    started = Started(**job, at=at, attempt=1, worker="w")
    match outcome:
        case "completed":
            end: BaseEvent = Succeeded(**job, at=at, attempt=1, duration_ms=1.0)
            return [submitted, started, end]
        case "failed":
            end = Failed(**job, at=at, attempt=1, error="boom", error_type="permanent:x")
            return [submitted, started, end]
        case "canceled":
            return [submitted, Canceled(**job, at=at)]
        case "running":
            return [submitted, started]
        case _:
            return [submitted]


@pytest.fixture
def store(store_url: str, settings: Settings) -> Iterator[Settings]:
    """A read store on each backend with old and new jobs in every state, as the projector
    writes them; the settings point at it."""
    now = datetime.now(UTC)
    events: list[BaseEvent] = []
    for n, outcome in enumerate(["completed", "failed", "canceled", "pending", "running"]):
        events += job_events(f"old-{outcome}", outcome, OLD + timedelta(minutes=n))
    events += job_events("new-completed", "completed", now)
    stored = [
        StoredEvent.decode(seq, e.subject, encode_event(e), e.at) for seq, e in enumerate(events, 1)
    ]
    engine = make_engine(store_url)
    init_schema(engine)
    with Session(engine) as session:
        jobs.apply_batch(session, stored)
    engine.dispose()
    yield settings.model_copy(update={"database_url": store_url})


def store_contents(settings: Settings) -> tuple[list[str], list[str]]:
    engine = make_engine(settings.effective_database_url)
    try:
        with Session(engine) as session:
            rows = session.exec(select(JobRow.job_id).order_by(col(JobRow.job_id))).all()
            timeline = session.exec(select(JobEventRow.job_id).distinct()).all()
            return list(rows), sorted(timeline)
    finally:
        engine.dispose()


async def test_read_store_purge_removes_old_finished_jobs_and_their_timelines(
    store: Settings,
) -> None:
    result = await run(store, target="read_store", older_than_seconds=HOUR)

    kept = ["new-completed", "old-pending", "old-running"]
    assert store_contents(store) == (kept, kept)
    assert (result.matched, result.deleted) == (3, 3)
    assert result.events_matched == result.events_deleted == 3 + 3 + 2
    assert result.target == "read_store"


async def test_read_store_dry_run_counts_only(store: Settings) -> None:
    before = store_contents(store)

    result = await run(store, target="read_store", older_than_seconds=HOUR, dry_run=True)

    assert store_contents(store) == before
    assert (result.matched, result.deleted) == (3, 0)
    assert (result.events_matched, result.events_deleted) == (8, 0)


async def test_read_store_purge_is_capped_oldest_first(store: Settings) -> None:
    result = await run(store, target="read_store", older_than_seconds=HOUR, max_files=2)

    assert (result.deleted, result.truncated) == (2, True)
    rows, _ = store_contents(store)
    assert "old-completed" not in rows and "old-failed" not in rows
    assert "old-canceled" in rows


def test_read_store_mode_takes_no_file_fields() -> None:
    with pytest.raises(ValueError, match="apply to target 'files' only"):
        CleanupPayload(target="read_store", older_than_seconds=0, pattern="*.tmp")


async def test_read_store_purge_reports_progress_between_transactions(
    store: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task, "PURGE_CHUNK", 1)
    reports: Reports = []

    result = await run(store, reports, target="read_store", older_than_seconds=HOUR)

    assert result.deleted == 3
    assert reports == [(1 / 3, "purged 1"), (2 / 3, "purged 2")]
