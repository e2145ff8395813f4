"""Who is in the log, end to end: a real nats-server, gateway (uvicorn), worker, scheduler
and projector. Every event of a job names its actor in ``GET /jobs/{id}/events``, in
``fq audit`` and in the read store's timeline (also after a rebuild from the log); a request
body cannot choose the actor; a plain ``nats pub`` producer is ``nats:anonymous`` or, with an
``Fq-Actor`` header, ``claimed:<name>``; with authentication on, the API key's principal
(``key:<name>``) is the actor of everything the API records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.domain.events import ACTOR_HEADER
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.principal import Scope
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from ferrisqueue.store import queries
from tests.conftest import StartService
from tests.integration.test_projector import read_store
from tests.support.auth import bearer, make_key
from tests.support.procs import run_fq
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration

WORKER = "w-actors"


def _timeline(engine: Engine, job_id: str) -> list[tuple[int, str, str | None]]:
    with Session(engine) as session:
        return [(r.seq, r.event, r.actor) for r in queries.job_timeline(session, job_id)]


async def _store_timeline(
    engine: Engine, job_id: str, count: int
) -> list[tuple[int, str, str | None]]:
    async def read() -> list[tuple[int, str, str | None]]:
        return _timeline(engine, job_id)

    return await wait_until(
        read, lambda rows: len(rows) >= count, timeout=20, what=f"{count} timeline rows"
    )


@pytest.mark.timeout(90)
async def test_a_retried_job_names_the_actor_of_every_event_everywhere(
    gateway: httpx.AsyncClient,
    start: StartService,
    nc: Client,
    settings: Settings,
    tmp_path: Path,
) -> None:
    start("worker", FQ_WORKER_ID=WORKER)
    start("scheduler")
    start("projections")
    job = {"type": "flaky", "payload": {"failures": 1}, "retry": {"base": 0.2, "jitter": 0}}
    accepted = await gateway.post("/jobs", json=job)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    await collect_events(
        nc, f"fq.job.*.{job_id}.succeeded", until=lambda b: len(b) == 1, timeout=30
    )

    trail = (await gateway.get(f"/jobs/{job_id}/events")).json()
    printed = await run_fq(settings, tmp_path, "audit", job_id)
    engine = read_store(settings.effective_database_url)
    stored = await _store_timeline(engine, job_id, len(trail))

    worker = f"worker:{WORKER}"
    expected = [
        ("submitted", "anonymous"),  # no authentication in this test: the stand-in caller
        ("started", worker),
        ("failed", worker),
        ("released", "scheduler"),
        ("started", worker),
        ("succeeded", worker),
    ]
    assert [(e["event"], e["actor"]) for e in trail] == expected
    assert all(e["body"]["actor"] == e["actor"] for e in trail)  # stored in the event itself
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert [line.split()[2:4] for line in lines] == [list(pair) for pair in expected]
    assert not [line for line in lines if line.split()[3] == "-"]
    assert stored == [(e["seq"], e["event"], e["actor"]) for e in trail]

    # A rebuild from the log reproduces the actors of the timeline.
    fresh = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    rebuilt = await run_fq(settings, tmp_path, "projections", "rebuild", "--database-url", fresh)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert _timeline(read_store(fresh), job_id) == stored


async def test_a_body_cannot_choose_the_actor(
    gateway: httpx.AsyncClient, nc: Client, settings: Settings
) -> None:
    forged = [
        ("/jobs", {"type": "echo", "actor": "key:admin"}),
        ("/jobs", {"type": "echo", "submitted_by": "key:admin"}),
        ("/jobs:batch", {"jobs": [{"type": "echo", "actor": "key:admin"}]}),
        ("/dead-letters/redrive", {"job_ids": [new_job_id()], "by": "key:admin"}),
        ("/dead-letters/purge", {"job_ids": [new_job_id()], "by": "key:admin"}),
        (
            "/schedules",
            {"name": "n", "schedule": "@every 1h", "job": {"type": "echo"}, "updated_by": "x"},
        ),
    ]

    answers = [await gateway.post(path, json=body) for path, body in forged]
    batch = await gateway.post("/jobs:batch", json={"jobs": [{"type": "echo"}] * 2})
    schedule = await gateway.post(
        "/schedules", json={"name": "hourly", "schedule": "@every 1h", "job": {"type": "echo"}}
    )
    redrive = await gateway.post("/dead-letters/redrive", json={"job_ids": [new_job_id()]})

    assert [a.status_code for a in answers] == [422] * len(forged), [a.text for a in answers]
    assert "`by` is not accepted" in answers[3].text
    stream = await nc.jetstream().stream_info(EVENT_STREAM)
    assert stream.state.messages == 2  # only the honest batch's two jobs were stored
    bodies = await collect_events(
        nc, "fq.job.*.*.submitted", until=lambda b: len(b) == 2, timeout=10
    )
    assert [b["actor"] for b in bodies] == ["anonymous", "anonymous"]
    assert batch.status_code == 202, batch.text
    assert schedule.status_code == 200 and schedule.json()["updated_by"] == "anonymous"
    assert redrive.status_code == 200 and redrive.json()["by"] == "anonymous"


async def test_a_plain_nats_producer_is_anonymous_or_claims_a_name(
    gateway: httpx.AsyncClient, start: StartService, nc: Client, settings: Settings, tmp_path: Path
) -> None:
    start("worker", FQ_WORKER_ID=WORKER)
    anonymous, claiming = new_job_id(), new_job_id()
    js = nc.jetstream()
    await js.publish(f"fq.job.default.{anonymous}.submitted", b'{"type": "echo"}')
    await js.publish(
        f"fq.job.default.{claiming}.submitted",
        b'{"type": "echo"}',
        headers={ACTOR_HEADER: "key:admin"},  # a name, not an identity: recorded as a claim
    )
    await collect_events(nc, "fq.job.*.*.succeeded", until=lambda b: len(b) == 2, timeout=20)

    first = (await gateway.get(f"/jobs/{anonymous}/events")).json()
    second = (await gateway.get(f"/jobs/{claiming}/events")).json()
    printed = await run_fq(settings, tmp_path, "audit", claiming)

    assert [(e["event"], e["actor"]) for e in first] == [
        ("submitted", "nats:anonymous"),
        ("started", f"worker:{WORKER}"),
        ("succeeded", f"worker:{WORKER}"),
    ]
    assert second[0]["actor"] == "claimed:key:admin"
    assert printed.stdout.splitlines()[0].split()[3] == "claimed:key:admin"


# --- the authenticated principal ----------------------------------------------------------


@pytest.fixture
async def authenticated(
    start: StartService, event_log: EventLog, settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """A gateway with authentication on, and the headers of a key named ``alice`` holding
    every scope."""
    key = await make_key(event_log, "alice", *Scope)
    process = start("gateway", FQ_AUTH="on")
    async with httpx.AsyncClient(base_url=str(settings.gateway_url), timeout=10) as client:

        async def ready() -> int:
            assert process.alive(), process.log()
            try:
                return (await client.get("/readyz")).status_code
            except httpx.TransportError:
                return 0

        await wait_until(ready, lambda code: code == 200, timeout=30, what="gateway /readyz")
        yield client, bearer(key)


async def test_the_authenticated_principal_is_the_actor_whatever_the_body_says(
    authenticated: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, alice = authenticated
    created = await client.post("/jobs", json={"type": "echo"}, headers=alice)
    job_id = created.json()["job_id"]
    batch = await client.post("/jobs:batch", json={"jobs": [{"type": "echo"}]}, headers=alice)
    canceled = await client.post(f"/jobs/{job_id}/cancel", headers=alice)
    forged = await client.post(
        "/dead-letters/redrive", json={"job_ids": [job_id], "by": "bob"}, headers=alice
    )
    redrive = await client.post("/dead-letters/redrive", json={"job_ids": [job_id]}, headers=alice)
    schedule = await client.post(
        "/schedules",
        json={"name": "hourly", "schedule": "@every 1h", "job": {"type": "echo"}},
        headers=alice,
    )
    paused = await client.post("/schedules/hourly/pause", headers=alice)
    trail = (await client.get(f"/jobs/{job_id}/events", headers=alice)).json()
    batch_id = batch.json()["jobs"][0]["job_id"]
    batch_trail = (await client.get(f"/jobs/{batch_id}/events", headers=alice)).json()

    assert created.status_code == 202 and canceled.status_code == 202, canceled.text
    assert [(e["event"], e["actor"]) for e in trail] == [
        ("submitted", "key:alice"),
        ("cancel_requested", "key:alice"),
        ("canceled", "key:alice"),
    ]
    assert trail[0]["body"]["actor"] == "key:alice"
    assert [(e["event"], e["actor"]) for e in batch_trail] == [("submitted", "key:alice")]
    assert forged.status_code == 422
    assert redrive.json()["by"] == "key:alice"  # skipped (not dead-lettered), but named
    assert schedule.json()["updated_by"] == "key:alice"
    assert paused.json()["updated_by"] == "key:alice"
