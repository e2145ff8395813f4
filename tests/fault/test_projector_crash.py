"""The projector SIGKILLed twice while jobs stream in: every restart resumes from the
checkpoint committed with the rows, so the read store ends equal to a fresh fold of the log
(exactly-once effects: no event applied twice, none skipped)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from nats.aio.client import Client
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.store import queries
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.fault.system import consuming
from tests.support.history import History, verify
from tests.support.waits import wait_until

pytestmark = pytest.mark.fault

JOBS = 150
BATCH = {"FQ_PROJECTOR_BATCH": "25"}
"""Small bursts: many transactions, so the kills land between and inside them."""


@pytest.mark.timeout(55)
async def test_a_killed_projector_leaves_the_read_store_equal_to_a_fresh_fold(
    start: StartService, nc: Client, producer: Producer, history: History, store: Engine
) -> None:
    start("worker", FQ_WORKER_ID="w1")
    await consuming(nc, waiting=1)
    projector = start("projections", **BATCH)

    async def produce() -> None:
        for n in range(0, JOBS, 10):
            await asyncio.gather(
                *(
                    producer.submit(f"job-{i}", {"type": "echo", "payload": {"i": i}})
                    for i in range(n, n + 10)
                )
            )

    producing = asyncio.create_task(produce())
    for threshold in (100, 250):  # events applied before each kill
        await wait_until(
            lambda: asyncio.to_thread(_checkpoint, store),
            _past(threshold),
            timeout=30,
            what=f"the projector past event {threshold}",
        )
        projector.kill()
        projector = start("projections", **BATCH)
    await producing
    verdict = await verify(nc, history, store)

    verdict.assert_ok()  # store_mismatches = ∅: every row and timeline equals the fold
    assert verdict.outcomes == {"completed": JOBS}
    assert verdict.observed is not None and verdict.observed.store is not None
    assert verdict.observed.store.checkpoint == verdict.observed.last_seq == 3 * JOBS
    assert sum(len(seqs) for seqs in verdict.observed.store.timeline.values()) == 3 * JOBS


def _past(threshold: int) -> Callable[[int], bool]:
    return lambda position: position >= threshold


def _checkpoint(store: Engine) -> int:
    with Session(store) as session:
        return queries.checkpoint(session, queries.JOBS_PROJECTION)
