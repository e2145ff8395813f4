"""Defining periodic schedules through the gateway's /schedules and through `fq cron`, on a
real gateway process and a real nats-server."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import nats.js.errors
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.events import utcnow
from ferrisqueue.domain.subjects import SCHEDULE_STREAM, cron_subject
from ferrisqueue.log.embedded import EmbeddedNats
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from tests.support.procs import run_fq

pytestmark = pytest.mark.integration

NIGHTLY = {
    "name": "nightly",
    "schedule": "30 2 * * *",
    "timezone": "Europe/Berlin",
    "job": {"type": "cleanup", "payload": {"older_than_seconds": 86400}, "max_attempts": 2},
}


async def server_schedule(nc: Client, name: str) -> dict[str, str] | None:
    try:
        msg = await nc.jetstream().get_last_msg(SCHEDULE_STREAM, cron_subject(name))
    except nats.js.errors.NotFoundError:
        return None
    return dict(msg.headers or {})


async def test_define_list_pause_resume_delete_over_http(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    created = await gateway.post("/schedules", json=NIGHTLY)
    await gateway.post(
        "/schedules", json={"name": "pulse", "schedule": "@every 30s", "job": {"type": "echo"}}
    )
    listed = await gateway.get("/schedules", params={"next": 2})
    one = await gateway.get("/schedules/nightly")

    assert created.status_code == 200, created.text
    body = created.json()
    assert body["schedule"] == "0 30 2 * * *"  # 5 fields made 6
    assert body["source"] == "api" and body["paused"] is False
    fires = [datetime.fromisoformat(f) for f in body["next_fires"]]
    assert len(fires) == 3 and all(f.minute == 30 and f.second == 0 for f in fires)
    assert fires[1] - fires[0] in (timedelta(hours=23), timedelta(hours=24), timedelta(hours=25))
    assert [s["name"] for s in listed.json()] == ["nightly", "pulse"]
    pulse = listed.json()[1]
    first = datetime.fromisoformat(pulse["next_fires"][0])
    assert utcnow() < first <= utcnow() + timedelta(seconds=31)
    assert datetime.fromisoformat(pulse["next_fires"][1]) - first == timedelta(seconds=30)
    assert one.json()["job"]["max_attempts"] == 2
    assert (await server_schedule(nc, "nightly")) is not None

    paused = await gateway.post("/schedules/nightly/pause")
    assert paused.status_code == 200
    assert paused.json()["paused"] is True and paused.json()["next_fires"] == []
    assert await server_schedule(nc, "nightly") is None

    resumed = await gateway.post("/schedules/nightly/resume")
    assert resumed.json()["paused"] is False and len(resumed.json()["next_fires"]) == 3
    headers = await server_schedule(nc, "nightly")
    assert headers is not None and headers["Nats-Schedule-Time-Zone"] == "Europe/Berlin"

    assert (await gateway.delete("/schedules/nightly")).status_code == 204
    assert await server_schedule(nc, "nightly") is None
    for method, path in [
        ("DELETE", "/schedules/nightly"),
        ("GET", "/schedules/nightly"),
        ("POST", "/schedules/nightly/pause"),
        ("POST", "/schedules/nightly/resume"),
    ]:
        assert (await gateway.request(method, path)).status_code == 404, (method, path)


async def test_trigger_creates_one_job_now_whose_event_names_the_caller(
    gateway: httpx.AsyncClient, event_log: EventLog
) -> None:
    await gateway.post("/schedules", json=NIGHTLY)
    await gateway.post("/schedules/nightly/pause")  # a paused schedule may be triggered too

    answer = await gateway.post("/schedules/nightly/trigger")

    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["schedule"], body["type"], body["queue"], body["by"]) == (
        "nightly",
        "cleanup",
        "default",
        "anonymous",
    )
    [submitted] = await event_log.history(body["job_id"])
    assert submitted.event.event == "submitted"
    assert submitted.event.actor == "anonymous"  # the caller, not cron:nightly
    assert submitted.event.payload == {"older_than_seconds": 86400}
    assert submitted.event.max_attempts == 2
    audit = (await gateway.get(f"/jobs/{body['job_id']}/events")).json()
    assert [(e["event"], e["actor"]) for e in audit] == [("submitted", "anonymous")]
    # The schedule itself is untouched: still paused, no tick fired.
    assert (await gateway.get("/schedules/nightly")).json()["paused"] is True
    assert (await gateway.post("/schedules/nope/trigger")).status_code == 404


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"schedule": "61 * * * * *"}, "second '61' is out of range (0-59)"),
        ({"schedule": "0 0 0 * * 5#3"}, "L, W and # are not supported"),
        ({"schedule": "@every 500ms"}, "whole hours, minutes and seconds"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"schedule": "@every 5m", "timezone": "UTC"}, "cron schedules only"),
        ({"job": {"type": "cleanup", "payload": {}}}, "older_than_seconds"),
        ({"name": "no.dots"}, "name"),
    ],
)
async def test_an_invalid_schedule_is_refused_with_422_and_the_reason(
    gateway: httpx.AsyncClient, change: dict[str, object], reason: str
) -> None:
    answer = await gateway.post("/schedules", json=NIGHTLY | change)

    assert answer.status_code == 422
    assert reason in answer.text
    assert (await gateway.get("/schedules")).json() == []


async def test_fq_cron_add_list_pause_delete(
    settings: Settings, tmp_path: Path, event_log: EventLog
) -> None:
    added = await run_fq(
        settings, tmp_path, "cron", "add", "tidy", "*/10 * * * *", "--type", "echo",
        "-p", '{"n": 1}', "--tz", "Asia/Tokyo",
    )  # fmt: skip
    refused = await run_fq(settings, tmp_path, "cron", "add", "bad", "61 * * * * *", "-t", "echo")
    listed = await run_fq(settings, tmp_path, "cron", "list", "--json", "--next", "2")
    paused = await run_fq(settings, tmp_path, "cron", "pause", "tidy")
    deleted = await run_fq(settings, tmp_path, "cron", "delete", "tidy")
    again = await run_fq(settings, tmp_path, "cron", "delete", "tidy")

    assert added.returncode == 0, added.stderr
    assert "tidy" in added.stdout and "0 */10 * * * *" in added.stdout
    assert refused.returncode == 2 and "second '61' is out of range" in refused.stderr
    (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["name"] == "tidy" and entry["source"] == "cli"
    assert entry["timezone"] == "Asia/Tokyo" and entry["job"]["payload"] == {"n": 1}
    fires = [datetime.fromisoformat(f) for f in entry["next_fires"]]
    assert fires[1] - fires[0] == timedelta(minutes=10) and fires[0].minute % 10 == 0
    assert paused.returncode == 0 and "paused" in paused.stdout
    assert deleted.returncode == 0 and "deleted tidy" in deleted.stdout
    assert again.returncode == 1 and "no schedule tidy" in again.stderr


@pytest.mark.timeout(60)
async def test_fq_cron_add_refuses_a_payload_breaking_its_contract_and_stores_nothing(
    settings: Settings, tmp_path: Path, event_log: EventLog
) -> None:
    refused = await run_fq(
        settings, tmp_path, "cron", "add", "purge", "@hourly", "-t", "cleanup", "-p", "{}"
    )
    listed = await run_fq(settings, tmp_path, "cron", "list", "--json")

    assert refused.returncode == 2, refused.stderr
    said = " ".join(refused.stderr.replace("│", " ").split())  # typer boxes and wraps it
    assert "the job is refused: payload.older_than_seconds: Field required" in said
    assert listed.returncode == 0 and listed.stdout.strip() == ""


async def test_schedules_answer_503_with_retry_after_while_nats_is_down(
    gateway: httpx.AsyncClient, nats_server: EmbeddedNats
) -> None:
    nats_server.stop()

    answers = [
        await gateway.post("/schedules", json=NIGHTLY),
        await gateway.get("/schedules"),
        await gateway.post("/schedules/nightly/pause"),
        await gateway.post("/schedules/nightly/trigger"),
        await gateway.delete("/schedules/nightly"),
    ]

    assert [a.status_code for a in answers] == [503] * 5
    assert all(a.headers["retry-after"] == "2" for a in answers)


async def test_a_schedule_whose_jobs_would_be_too_large_is_refused_with_413(
    gateway: httpx.AsyncClient,
) -> None:
    huge = {
        "name": "huge",
        "schedule": "@hourly",
        "job": {"type": "echo", "payload": {"x": "y" * 600_000}},
    }

    answer = await gateway.post("/schedules", json=huge)

    assert answer.status_code == 413
    assert "the limit is 524288 bytes" in answer.json()["detail"]
    assert (await gateway.get("/schedules")).json() == []
