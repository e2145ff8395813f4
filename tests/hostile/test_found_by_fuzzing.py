"""Regressions for what schemathesis found at the gateway, each on a real gateway."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

BODY_OPERATIONS = [
    ("post", "/jobs"),
    ("post", "/jobs:batch"),
    ("post", "/dead-letters/redrive"),
    ("post", "/dead-letters/purge"),
    ("post", "/schedules"),
]


async def test_a_time_that_overflows_in_utc_is_a_422_not_a_500(
    gateway: httpx.AsyncClient,
) -> None:
    # 0001-01-01T00:00+00:01 is in year 0 once in UTC: it raised OverflowError (500).
    body = {"by": "op", "filter": {"since": "0001-01-01T00:00:00+00:01"}}

    redrive = await gateway.post("/dead-letters/redrive", json=body)
    submit = await gateway.post(
        "/jobs", json={"type": "echo", "run_at": "9999-12-31T23:00:00-05:00"}
    )

    assert redrive.status_code == 422, redrive.text
    assert "out of range once converted to UTC" in redrive.text
    assert submit.status_code == 422, submit.text


async def test_a_body_that_is_not_utf8_gets_the_documented_400(
    gateway: httpx.AsyncClient,
) -> None:
    document = (await gateway.get("/openapi.json")).json()
    headers = {"Content-Type": "application/json"}

    answers = [
        await gateway.request(method, path, content=b"\xff\xfe{", headers=headers)
        for method, path in BODY_OPERATIONS
    ]

    for (method, path), answer in zip(BODY_OPERATIONS, answers, strict=True):
        assert answer.status_code == 400, (path, answer.text)
        assert set(answer.json()) == {"detail"}
        documented = document["paths"][path][method]["responses"]
        assert {"400", "408", "413"} <= documented.keys(), (path, documented.keys())
