"""The scheduler SIGKILLed while jobs are retrying: timers already armed fire on the server
without it, failures stored while it is down wait in the log, and the restarted scheduler
arms them from its durable consumer — every job still completes, none runs an extra time."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.events import Released, utcnow
from scheduler.timers import TIMER_CONSUMER
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.fault.system import consumer_info, consuming
from tests.support.history import History, verify
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.fault

EACH = 10
FLAKY = {
    "type": "flaky",
    "payload": {"failures": 1},
    "max_attempts": 3,
    # Long enough that the first batch's timers are still pending when the scheduler dies.
    "retry": {"base": 1.5, "cap": 1.5, "jitter": 0},
}


@pytest.mark.timeout(50)
async def test_retries_survive_a_scheduler_crash(
    start: StartService, nc: Client, producer: Producer, history: History, store: Engine
) -> None:
    start("projections")
    scheduler = start("scheduler")
    start("worker", FQ_WORKER_ID="w1")
    await consuming(nc, waiting=1)
    # The scheduler starts on its own time: its relay must be pulling before jobs fail, or
    # the first batch would not be armed before the kill.
    await wait_until(
        lambda: consumer_info(nc, TIMER_CONSUMER),
        lambda info: info is not None and (info.num_waiting or 0) >= 1,
        timeout=30,
        what="the timer relay to pull",
    )

    for n in range(EACH):
        await producer.submit(f"armed-{n}", FLAKY)
    armed = {history.ops[f"armed-{n}"].job_id for n in range(EACH)}
    # The relay acks a failure once its timer is stored: wait until it has taken them all.
    await collect_events(nc, "fq.job.*.*.failed", until=lambda b: len(b) >= EACH, timeout=20)
    await _relay_caught_up(nc)
    scheduler.kill()
    for n in range(EACH):
        await producer.submit(f"orphaned-{n}", FLAKY)
    orphaned = {history.ops[f"orphaned-{n}"].job_id for n in range(EACH)}
    await collect_events(
        nc,
        "fq.job.*.*.failed",
        until=lambda b: {e["job_id"] for e in b} >= orphaned,
        timeout=20,
    )
    restarted_at = utcnow()
    start("scheduler")
    verdict = await verify(nc, history, store)

    verdict.assert_ok()  # each rerun is a retry after a failure, nothing more
    assert verdict.outcomes == {"completed": 2 * EACH}
    assert verdict.runs_per_job == {2: 2 * EACH}
    assert verdict.observed is not None
    for job_id, trace in verdict.observed.jobs.items():
        [release] = [m for m in trace.messages if isinstance(m.event, Released)]
        if job_id in orphaned:  # nobody armed its timer until the scheduler came back
            assert release.stored_at > restarted_at
        else:
            assert job_id in armed


async def _relay_caught_up(nc: Client) -> None:
    """Wait until the timer relay's durable consumer has nothing pending or unacked."""
    await wait_until(
        lambda: consumer_info(nc, TIMER_CONSUMER),
        lambda i: i is not None and i.num_pending == 0 and i.num_ack_pending == 0,
        timeout=20,
        what="the timer relay to arm every timer",
    )
