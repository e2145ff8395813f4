"""The fenced checkpoint: a batch commits only on top of the checkpoint it was applied to, so
two projectors racing on one read store can neither apply an event twice nor skip one; and
the divergence signals a projection counts (on SQLite and PostgreSQL alike)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.domain.events import Started, encode_event
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.errors import CheckpointMoved
from ferrisqueue.store import queries
from ferrisqueue.store.db import commit_at
from ferrisqueue.store.models import ProjectionHealth
from projections import health, jobs, workers
from tests.unit.test_projection_batches import T0, contents, log_of

pytestmark = pytest.mark.timeout(30)


def apply(
    engine: Engine, projection: jobs.JobsProjection, batch: list[StoredEvent], after: int
) -> int:
    with Session(engine) as session:
        return projection.apply_batch(session, batch, after=after)


def test_two_projectors_racing_on_one_store_apply_each_event_once(store_engine: Engine) -> None:
    log = log_of(4)  # 13 messages
    first, second = jobs.JobsProjection(), jobs.JobsProjection()

    assert apply(store_engine, first, log[:5], after=0) == 5
    with pytest.raises(CheckpointMoved):
        apply(store_engine, second, log[:5], after=0)  # it read the store before the first wrote
    assert apply(store_engine, second, log[5:9], after=5) == 9  # resumed from the store
    with pytest.raises(CheckpointMoved):
        apply(store_engine, first, log[5:9], after=5)  # the first is now the stale one
    assert apply(store_engine, first, log[9:], after=9) == 13

    with Session(store_engine) as session:
        assert queries.checkpoint(session, jobs.NAME) == 13
    timeline = contents(store_engine)[1]
    assert [row["seq"] for row in timeline] == list(range(1, 14))  # none twice, none skipped


def test_a_commit_on_a_checkpoint_another_projector_moved_writes_nothing(
    store_engine: Engine,
) -> None:
    log = log_of(2)
    with Session(store_engine) as session:
        jobs.apply_batch(session, log[:3], after=0)
    with Session(store_engine) as stale, pytest.raises(CheckpointMoved):
        stale.add(ProjectionHealth(name="written-by-the-stale-batch"))
        commit_at(stale, jobs.NAME, 7, T0, after=2)  # the store is at 3
    before = contents(store_engine)
    with Session(store_engine) as session, pytest.raises(CheckpointMoved):
        jobs.apply_batch(session, log[3:], after=2)  # the store is at 3, not 2
    assert contents(store_engine) == before
    with Session(store_engine) as session:
        assert queries.projection_health(session) == {}


def test_the_workers_projection_is_fenced_too(store_engine: Engine) -> None:
    beat = workers.StoredHeartbeat(
        1, T0, b"{}"
    )  # undecodable: skipped, but it moves the checkpoint
    with Session(store_engine) as session:
        assert workers.apply_batch(session, [beat], after=0) == 1
    with Session(store_engine) as session, pytest.raises(CheckpointMoved):
        workers.apply_batch(session, [workers.StoredHeartbeat(2, T0, b"{}")], after=0)


def test_an_event_for_a_job_never_created_is_counted_as_an_orphan(store_engine: Engine) -> None:
    stray = Started(job_id="nobody", queue="default", at=T0, attempt=1, worker="w")
    orphan = StoredEvent.decode(1, stray.subject, encode_event(stray), T0)
    with Session(store_engine) as session:
        jobs.apply_batch(session, [orphan, *log_of(1)[1:2]], after=0)  # plus job-000's start
        signals = queries.projection_health(session)

    found = signals[jobs.NAME]
    assert (found.orphan_events, found.lost_deliveries, found.checkpoint_moves) == (2, 0, 0)
    assert found.last_problem is not None and "sequence 1" in found.last_problem


def test_divergence_counters_add_up_across_transactions(store_engine: Engine) -> None:
    health.record(store_engine, jobs.NAME, "sequence 4 not delivered", T0, lost_deliveries=1)
    health.record(store_engine, jobs.NAME, "moved", T0, checkpoint_moves=1)
    health.record(store_engine, jobs.NAME, "sequence 9 not delivered", T0, lost_deliveries=1)
    with Session(store_engine) as session:
        found = queries.projection_health(session)[jobs.NAME]
    assert (found.lost_deliveries, found.checkpoint_moves, found.orphan_events) == (2, 1, 0)
    assert found.last_problem == "sequence 9 not delivered"
    with pytest.raises(ValueError, match="not a projection health counter"):
        health.record(store_engine, jobs.NAME, "?", T0, typo=1)
