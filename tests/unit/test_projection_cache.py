"""The jobs projection's cache of unfinished jobs (``JobsProjection``): the store ends exactly
as without it, whatever the batches; known jobs are not read again; a failed batch empties
it; finished jobs and the oldest beyond the limit leave it; payloads stay in the rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session

from ferrisqueue.domain.events import Started, Submitted, encode_event
from ferrisqueue.domain.fold import JobState, apply, evolve
from ferrisqueue.domain.states import JobStatus
from ferrisqueue.domain.stored import StoredEvent
from projections import jobs
from tests.unit.test_projection_batches import T0, contents, log_of, sqlite_store

pytestmark = pytest.mark.timeout(30)


@contextmanager
def listening(engine: Engine, name: str, listener: Callable[..., None]) -> Iterator[None]:
    """``listener`` on ``engine``'s event ``name`` inside the block."""
    event.listen(engine, name, listener)
    try:
        yield
    finally:
        event.remove(engine, name, listener)


@contextmanager
def job_reads(engine: Engine) -> Iterator[list[str]]:
    """The job ids that ``engine`` reads from ``jobs`` inside the block."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM jobs" in statement:
            values = parameters.values() if isinstance(parameters, dict) else parameters
            seen.extend(v for v in values if isinstance(v, str) and v.startswith("job-"))

    with listening(engine, "before_cursor_execute", before):
        yield seen


def batches(log: list[StoredEvent], size: int) -> list[list[StoredEvent]]:
    return [log[i : i + size] for i in range(0, len(log), size)]


def apply_all(engine: Engine, projection: jobs.JobsProjection, log: list[StoredEvent]) -> None:
    for batch in batches(log, 4):
        with Session(engine) as session:
            projection.apply_batch(session, batch)


def test_the_store_ends_as_without_the_cache(store_engine: Engine, tmp_path: Path) -> None:
    log = log_of(12)
    apply_all(store_engine, jobs.JobsProjection(), log)

    with sqlite_store(tmp_path / "uncached.db") as uncached:
        for batch in batches(log, 4):
            with Session(uncached) as session:
                jobs.apply_batch(session, batch)
        assert contents(store_engine) == contents(uncached)
    rows = contents(store_engine)[0]
    assert [row["payload"] for row in rows] == [{"n": n} for n in range(12)]  # kept by updates


def test_a_job_is_read_once_when_it_is_created_and_never_again(
    store_engine: Engine, tmp_path: Path
) -> None:
    log = log_of(6)[:-1]  # per job: submitted, started, succeeded, in batches of 4
    with job_reads(store_engine) as reads:
        apply_all(store_engine, jobs.JobsProjection(), log)
    assert sorted(reads) == [f"job-{n:03d}" for n in range(6)]  # new? (or a duplicate)

    with sqlite_store(tmp_path / "uncached.db") as uncached, job_reads(uncached) as reads:
        for batch in batches(log, 4):
            with Session(uncached) as session:
                jobs.apply_batch(session, batch)
    assert len(reads) > 6  # without the cache, later batches read their jobs again


def test_a_failed_batch_empties_the_cache_and_the_next_one_reads_the_store(
    tmp_path: Path,
) -> None:
    log = log_of(3)
    projection = jobs.JobsProjection()
    with sqlite_store(tmp_path / "store.db") as engine:
        with Session(engine) as session:
            projection.apply_batch(session, log[:1])  # job-000 submitted: cached
        assert projection.cached == 1

        def refuse(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            # The batch's metrics write, after its timeline and jobs rows (which go to the
            # driver directly, past SQLAlchemy's events).
            if statement.lstrip().upper().startswith("INSERT INTO METRICS_MINUTE"):
                raise RuntimeError("disk full")

        with (
            listening(engine, "before_cursor_execute", refuse),
            Session(engine) as session,
            pytest.raises(RuntimeError, match="disk full"),
        ):
            projection.apply_batch(session, log[1:2])
        assert projection.cached == 0

        with job_reads(engine) as reads, Session(engine) as session:
            projection.apply_batch(session, log[1:2])
        assert len(reads) == 1
        assert contents(engine)[0][0]["status"] == "running"


def test_a_failed_commit_empties_the_cache_and_keeps_nothing_of_the_batch(
    tmp_path: Path,
) -> None:
    log = log_of(2)
    projection = jobs.JobsProjection()
    with sqlite_store(tmp_path / "store.db") as engine:
        with Session(engine) as session:
            projection.apply_batch(session, log[:2])  # job-000 submitted and started
        assert projection.cached == 1
        before = contents(engine)

        def refuse(_conn: Any) -> None:  # the COMMIT itself fails (all statements ran)
            raise RuntimeError("I/O error on commit")

        with (
            listening(engine, "commit", refuse),
            Session(engine) as session,
            pytest.raises(RuntimeError, match="I/O error"),
        ):
            projection.apply_batch(session, log[2:5])  # job-000 done, job-001 started
        assert projection.cached == 0
        # SQLAlchemy returns a connection whose commit failed to the pool with its transaction
        # still open; the projector's engine is disposed as it exits, which drops it.
        engine.dispose()
        assert contents(engine) == before  # nothing of the batch, checkpoint included

        with job_reads(engine) as reads, Session(engine) as session:
            projection.apply_batch(session, log[2:5])
        assert sorted(reads) == ["job-000", "job-001"]  # both read from the store again
        assert [row["status"] for row in contents(engine)[0]] == ["completed", "running"]


def test_a_checkpoint_moved_by_another_projector_empties_the_cache(tmp_path: Path) -> None:
    """A leader that has not noticed yet that it lost the lock must not fold over what the
    new leader wrote meanwhile with states it cached before."""
    log = log_of(1)[:3]  # job-000: submitted, started, succeeded
    old_leader = jobs.JobsProjection()
    with sqlite_store(tmp_path / "store.db") as engine:
        with Session(engine) as session:
            old_leader.apply_batch(session, log[:1])  # caches job-000 as pending
        with Session(engine) as session:
            jobs.JobsProjection().apply_batch(session, log[1:2])  # the new leader: running
        with job_reads(engine) as reads, Session(engine) as session:
            old_leader.apply_batch(session, log[2:3])
        assert reads == ["job-000"]
        rows, timeline = contents(engine)[:2]
        assert rows[0]["status"] == "completed"
        assert all(row["applied"] for row in timeline)


def test_finished_jobs_leave_it_and_the_oldest_go_beyond_the_limit(tmp_path: Path) -> None:
    projection = jobs.JobsProjection(limit=3)
    submitted = [
        Submitted(
            job_id=f"job-{n}", queue="default", at=T0, type="echo", payload={"big": "x" * 100}
        )
        for n in range(5)
    ]
    starts = [
        Started(job_id=f"job-{n}", queue="default", at=T0, attempt=1, worker="w") for n in (4, 0)
    ]
    log = [
        StoredEvent.decode(seq, e.subject, encode_event(e), T0)
        for seq, e in enumerate([*submitted, *starts], 1)
    ]
    with sqlite_store(tmp_path / "store.db") as engine:
        with Session(engine) as session:
            projection.apply_batch(session, log[:5])
        assert projection.cached == 3

        for start, read in ((log[5], []), (log[6], ["job-0"])):  # job-0 was among the oldest
            with job_reads(engine) as reads, Session(engine) as session:
                projection.apply_batch(session, [start])
            assert reads == read
        assert projection.cached == 3

    with sqlite_store(tmp_path / "other.db") as engine, Session(engine) as session:
        roomy = jobs.JobsProjection(limit=10)
        roomy.apply_batch(session, log_of(2)[:5])  # job-000 finished, job-001 running
        assert roomy.cached == 1


def test_evolve_is_dataclasses_replace() -> None:
    created = apply(None, Submitted(job_id="j", queue="q", at=T0, type="echo", payload={"a": 1}))
    state = created.state
    assert isinstance(state, JobState)
    for changes in (
        {},
        {"status": JobStatus.RUNNING, "attempts": 2, "worker": "w"},
        {"payload": {}, "result": [1, 2], "cancel_requested": True},
    ):
        assert evolve(state, changes) == replace(state, **changes)
