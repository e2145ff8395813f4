"""The gateway knows the job types' contracts: it lists them with their JSON Schemas and
refuses, with field errors, a payload that breaks the contract of its type. A type it has no
contract for is accepted: a worker with a plugin the gateway lacks may run it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.subjects import EVENT_STREAM

pytestmark = pytest.mark.integration

BUILTINS = ["cleanup", "data_processing", "email", "image", "report"]


async def stored_events(nc: Client) -> int:
    info = await nc.jetstream().stream_info(EVENT_STREAM)
    return info.state.messages


async def test_job_types_lists_the_builtins_with_their_schemas(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.get("/job-types")

    assert response.status_code == 200
    listed = response.json()
    names = [t["name"] for t in listed]
    assert names == sorted(names)
    assert set(BUILTINS) <= set(names)  # plugins installed in this environment may add more
    for job_type in (t for t in listed if t["name"] in BUILTINS):
        assert job_type["description"], job_type["name"]
        for schema in (job_type["payload_schema"], job_type["result_schema"]):
            assert schema["type"] == "object", job_type["name"]
            assert schema["properties"], job_type["name"]
        assert job_type["payload_schema"]["additionalProperties"] is False, job_type["name"]
    report = next(t for t in listed if t["name"] == "report")
    assert report["payload_schema"]["required"] == ["since"]
    assert {"since", "until", "queues", "formats", "output_dir"} == set(
        report["payload_schema"]["properties"]
    )
    assert {"artifacts", "totals"} <= set(report["result_schema"]["properties"])


@pytest.mark.parametrize(
    ("type_", "payload", "loc", "says"),
    [
        (
            "report",
            {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            ["body", "payload"],
            "since must be before until",
        ),
        ("report", {"since": "2026-01-01T00:00:00"}, ["body", "payload", "since"], "timezone"),
        (
            "report",
            {"since": "2026-01-01T00:00:00Z", "formats": ["docx"]},
            ["body", "payload", "formats", 0],
            "html",
        ),
        (
            "email",
            {"to": ["not an address"], "subject_template": "Hi", "text_template": "Hello"},
            ["body", "payload", "to"],
            "not an email address",
        ),
    ],
    ids=["report-empty-period", "report-naive-time", "report-unknown-format", "email-bad-to"],
)
async def test_payload_breaking_a_builtin_contract_is_422_with_the_field(
    gateway: httpx.AsyncClient,
    nc: Client,
    type_: str,
    payload: dict[str, Any],
    loc: list[Any],
    says: str,
) -> None:
    response = await gateway.post("/jobs", json={"type": type_, "payload": payload})

    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    matching = [e for e in detail if e["loc"][: len(loc)] == loc]
    assert matching, detail
    assert any(says in e["msg"] for e in matching), matching
    assert await stored_events(nc) == 0, "a refused job reached the event log"


async def test_payload_keeping_the_contract_is_accepted(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    response = await gateway.post(
        "/jobs",
        json={
            "type": "report",
            "payload": {"since": "2026-01-01T00:00:00+02:00", "formats": ["csv", "pdf"]},
        },
    )

    assert response.status_code == 202, response.text
    assert await stored_events(nc) == 1


async def test_unknown_type_is_accepted_without_validation(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    response = await gateway.post(
        "/jobs", json={"type": "only_on_some_worker", "payload": {"anything": [1, "two"]}}
    )

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    assert await stored_events(nc) == 1
