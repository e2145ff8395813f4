"""FQ_LOG_FORMAT=json: a real worker process on a real nats-server writes one JSON object per
line, and the lines about a job carry its job_id, queue, attempt and worker_id (and the
trace id its producer's traceparent names)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.events import Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from tests.conftest import StartService
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def submit(event_log: EventLog, type_: str, payload: dict[str, Any]) -> str:
    job_id = new_job_id()
    event = Submitted(job_id=job_id, queue="default", at=utcnow(), type=type_, payload=payload)
    await event_log.append(event, headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
    return job_id


async def test_a_json_worker_log_is_json_lines_and_a_jobs_lines_name_the_job(
    event_log: EventLog, start: StartService, nc: Client
) -> None:
    worker = start("worker", FQ_LOG_FORMAT="json", FQ_LOG_LEVEL="DEBUG", FQ_WORKER_ID="w-json")
    ok = await submit(event_log, "echo", {"hello": "world"})
    bad = await submit(event_log, "fail", {"message": "bad input"})
    await collect_events(nc, f"fq.job.*.{ok}.succeeded", until=bool, timeout=20)
    await collect_events(nc, f"fq.job.*.{bad}.dead_lettered", until=bool, timeout=20)
    assert worker.terminate() == 0

    lines = [json.loads(line) for line in worker.log().splitlines()]  # every line is JSON

    assert lines and all(line["service"] == "worker[w-json]" for line in lines)
    by_job = {job: [line for line in lines if line.get("job_id") == job] for job in (ok, bad)}
    assert any(line["message"].endswith(": succeeded") for line in by_job[ok])
    assert any(line["message"].startswith("dead-lettered") for line in by_job[bad])
    for line in by_job[ok] + by_job[bad]:
        assert (line["queue"], line["attempt"], line["worker_id"], line["trace_id"]) == (
            "default", 1, "w-json", TRACE_ID
        )  # fmt: skip
    assert all("job_id" not in line for line in lines if "pulling" in line["message"])


async def test_the_gateways_access_log_can_be_switched_on_in_the_json_format(
    start: StartService, settings: Settings, event_log: EventLog
) -> None:
    gateway = start("gateway", FQ_LOG_FORMAT="json", FQ_GATEWAY_ACCESS_LOG="true")
    async with httpx.AsyncClient(base_url=str(settings.gateway_url), timeout=10) as client:

        async def ready() -> int:
            try:
                return (await client.get("/readyz")).status_code
            except httpx.TransportError:
                return 0

        await wait_until(ready, lambda code: code == 200, timeout=20, what="gateway /readyz")
        answer = await client.post("/jobs", json={"type": "echo"})
    assert answer.status_code == 202
    gateway.terminate()  # uvicorn re-raises the SIGTERM it handled: no exit code to check

    lines = [json.loads(line) for line in gateway.log().splitlines()]  # every line is JSON

    (submit,) = [line for line in lines if line.get("path") == "/jobs"]
    assert submit["logger"] == "uvicorn.access"
    assert (submit["method"], submit["status"]) == ("POST", 202)
    # The request bound its job's fields; the access line is written in its context.
    assert (submit["job_id"], submit["queue"]) == (answer.json()["job_id"], "default")
    assert any(line["message"].startswith("Uvicorn running on") for line in lines)
