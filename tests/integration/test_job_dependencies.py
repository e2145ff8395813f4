"""Job dependencies end to end on a real nats-server: the gateway (single and batch
submits), the CLI's ``--after``, the scheduler's dependency gate and two worker processes.
Order is asserted from the events' own times in the log, never by sleeping."""

from __future__ import annotations

import functools
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.events import BaseEvent, Canceled, Released, Started, Succeeded
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.topology import worker_consumer_name
from ferrisqueue.settings import Settings
from scheduler.dependencies import DEPENDENCY_CONSUMER
from tests.conftest import StartService
from tests.integration.test_delayed_jobs import pulling
from tests.support.procs import run_fq
from tests.support.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def services_ready(start: StartService, nc: Client) -> None:
    """A scheduler and two workers, each consumer pulling."""
    start("scheduler")
    start("worker", FQ_WORKER_ID="w1")
    start("worker", FQ_WORKER_ID="w2")
    for consumer in (DEPENDENCY_CONSUMER, worker_consumer_name("default")):
        await wait_until(
            functools.partial(pulling, nc, consumer), bool, timeout=30, what=f"{consumer} pulls"
        )


async def submit(gateway: httpx.AsyncClient, **body: Any) -> str:
    answer = await gateway.post("/jobs", json={"type": "echo", **body})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["job_id"])


async def finished(gateway: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    answer = await wait_until(
        lambda: gateway.get(f"/jobs/{job_id}/status"),
        lambda r: r.json()["status"] in ("completed", "failed", "canceled"),
        timeout=45,
        what=f"{job_id} finished",
    )
    return dict(answer.json())


async def events(event_log: EventLog, job_id: str) -> list[BaseEvent]:
    return [s.event for s in await event_log.history(job_id) if s.event is not None]


def when(history: list[BaseEvent], kind: type[BaseEvent]) -> list[datetime]:
    return [e.at for e in history if isinstance(e, kind)]


async def submit_diamond(gateway: httpx.AsyncClient, how: str) -> dict[str, str]:
    """A -> B, A -> C, (B, C) -> D; B and C take a while, B longer."""
    sleep = {"type": "sleep", "payload": {"seconds": 0.6}}
    if how == "api":
        a = await submit(gateway, **sleep)
        b = await submit(gateway, type="sleep", payload={"seconds": 1.2}, depends_on=[a])
        c = await submit(gateway, **sleep, depends_on=[a])
        d = await submit(gateway, depends_on=[b, c])
        return {"A": a, "B": b, "C": c, "D": d}
    answer = await gateway.post(
        "/jobs:batch",
        json={
            "jobs": [
                {"type": "echo", "after_items": [1, 2]},  # D first: the order is the gate's
                {"type": "sleep", "payload": {"seconds": 1.2}, "after_items": [3]},
                {**sleep, "after_items": [3]},
                sleep,
            ]
        },
    )
    assert answer.status_code == 202, answer.text
    ids = [item["job_id"] for item in answer.json()["jobs"]]
    return {"D": ids[0], "B": ids[1], "C": ids[2], "A": ids[3]}


@pytest.mark.parametrize("how", ["api", "batch"])
async def test_a_diamond_runs_d_once_after_both_b_and_c_succeeded(
    gateway: httpx.AsyncClient, start: StartService, nc: Client, event_log: EventLog, how: str
) -> None:
    await services_ready(start, nc)
    jobs = await submit_diamond(gateway, how)
    waiting = (await gateway.get(f"/jobs/{jobs['D']}/status")).json()

    done = {name: await finished(gateway, job) for name, job in jobs.items()}
    history = {name: await events(event_log, job) for name, job in jobs.items()}

    assert (waiting["status"], waiting["pending_reason"]) == ("pending", "dependencies")
    assert {name: d["status"] for name, d in done.items()} == dict.fromkeys(jobs, "completed")
    (d_started,) = when(history["D"], Started)  # D ran exactly once
    (d_released,) = [e for e in history["D"] if isinstance(e, Released)]
    assert d_released.actor == "scheduler"
    (b_done,), (c_done,), (a_done,) = (when(history[n], Succeeded) for n in ("B", "C", "A"))
    assert max(b_done, c_done) <= d_released.at <= d_started, (b_done, c_done, d_released)
    gate_ms = (d_released.at - max(b_done, c_done)).total_seconds() * 1000
    start_ms = (d_started - max(b_done, c_done)).total_seconds() * 1000
    print(f"{how}: last parent succeeded -> D released {gate_ms:.0f} ms, started {start_ms:.0f} ms")
    for middle in ("B", "C"):
        assert a_done <= when(history[middle], Started)[0]
    # Each parent's history names the child that waits for it (who to wake).
    assert [e.event for e in history["B"]].count("dependent") == 1


async def test_a_parent_failed_for_good_cancels_the_child_and_its_children(
    gateway: httpx.AsyncClient, start: StartService, nc: Client, event_log: EventLog
) -> None:
    await services_ready(start, nc)
    b = await submit(gateway, type="fail", payload={"message": "no luck"})
    c = await submit(gateway)
    d = await submit(gateway, depends_on=[b, c])
    e = await submit(gateway, depends_on=[d])

    done = {name: await finished(gateway, job) for name, job in {"d": d, "e": e}.items()}

    assert done["d"]["status"] == done["e"]["status"] == "canceled"
    history_d, history_e = await events(event_log, d), await events(event_log, e)
    (canceled_d,) = [x for x in history_d if isinstance(x, Canceled)]
    (canceled_e,) = [x for x in history_e if isinstance(x, Canceled)]
    assert canceled_d.reason is not None and f"parent {b} failed" in canceled_d.reason
    assert "no luck" in canceled_d.reason
    assert canceled_e.reason == f"parent {d} was canceled"
    assert canceled_d.actor == canceled_e.actor == "scheduler"
    assert not any(isinstance(x, Started) for x in history_d + history_e)


async def test_a_cycle_in_a_batch_and_an_unknown_parent_are_refused(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    cycle = await gateway.post(
        "/jobs:batch",
        json={
            "jobs": [
                {"type": "echo"},
                {"type": "echo", "after_items": [2]},
                {"type": "echo", "after_items": [1]},
            ]
        },
    )
    unknown = await gateway.post("/jobs", json={"type": "echo", "depends_on": ["no-such-job"]})
    unknown_in_batch = await gateway.post(
        "/jobs:batch", json={"jobs": [{"type": "echo", "depends_on": ["no-such-job"]}]}
    )
    out_of_range = await gateway.post(
        "/jobs:batch", json={"jobs": [{"type": "echo", "after_items": [5]}]}
    )
    with_delay = await gateway.post("/jobs", json={"type": "echo", "depends_on": ["x"], "delay": 5})

    assert cycle.status_code == 422, cycle.text
    assert "cycle: #1 -> #2 -> #1" in cycle.text
    assert unknown.status_code == 422, unknown.text
    assert "unknown parent job no-such-job" in unknown.text
    assert unknown.json()["detail"][0]["loc"] == ["body", "depends_on"]
    assert unknown_in_batch.status_code == 422, unknown_in_batch.text
    assert unknown_in_batch.json()["detail"][0]["loc"] == ["body", "jobs", 0, "depends_on"]
    assert out_of_range.status_code == 422 and "no job #5" in out_of_range.text
    assert with_delay.status_code == 422 and "give no run_at or delay" in with_delay.text
    assert await stored(nc) == 0  # nothing of any of them was stored


async def stored(nc: Client) -> int:
    info = await nc.jetstream().stream_info(EVENT_STREAM)
    return int(info.state.messages)


async def test_fq_submit_after_waits_for_every_parent(
    gateway: httpx.AsyncClient,
    start: StartService,
    nc: Client,
    event_log: EventLog,
    settings: Settings,
    tmp_path: Path,
) -> None:
    await services_ready(start, nc)
    a = await submit(gateway, type="sleep", payload={"seconds": 0.5})
    b = await submit(gateway)

    child = await run_fq(settings, tmp_path, "submit", "echo", "--after", a, "--after", b)
    over_nats = await run_fq(settings, tmp_path, "submit", "echo", "--after", a, "--nats")
    refused = await run_fq(settings, tmp_path, "submit", "echo", "--after", "no-such-job")

    assert child.returncode == 0, child.stderr
    assert over_nats.returncode == 0, over_nats.stderr
    ids = {"cli": child.stdout.strip(), "nats": over_nats.stdout.strip()}
    for job in ids.values():
        assert (await finished(gateway, job))["status"] == "completed"
    history = await events(event_log, ids["cli"])
    assert history[0].event == "awaiting"
    assert Counter(e.event for e in history)["started"] == 1
    (a_done,) = when(await events(event_log, a), Succeeded)
    assert a_done <= when(history, Started)[0]
    assert refused.returncode != 0
    assert "unknown parent job no-such-job" in refused.stdout + refused.stderr


async def test_a_child_whose_parent_finished_while_the_scheduler_was_down_is_released_once(
    gateway: httpx.AsyncClient, start: StartService, nc: Client, event_log: EventLog
) -> None:
    scheduler = start("scheduler")
    start("worker", FQ_WORKER_ID="w1")
    await wait_until(
        functools.partial(pulling, nc, DEPENDENCY_CONSUMER), bool, timeout=30, what="gate pulls"
    )
    # Long enough that the scheduler is surely gone before the parent finishes.
    parent = await submit(gateway, type="sleep", payload={"seconds": 3.0})
    child = await submit(gateway, depends_on=[parent])
    await wait_until(
        lambda: events(event_log, parent),
        lambda history: any(e.event == "dependent" for e in history),
        timeout=20,
        what="the child noted on its parent",
    )

    scheduler.kill()  # SIGKILL: nothing handed back
    assert (await finished(gateway, parent))["status"] == "completed"
    waiting = [e.event for e in await events(event_log, child)]
    start("scheduler")
    done = await finished(gateway, child)

    assert waiting == ["awaiting"]  # nobody released it while no scheduler ran
    assert done["status"] == "completed"
    history = await events(event_log, child)
    assert [e.event for e in history].count("released") == 1
    assert [e.event for e in history].count("started") == 1
