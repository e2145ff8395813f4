"""Regressions for what schemathesis found at the gateway, each on a real gateway."""

from __future__ import annotations

import httpx
import pytest

from tests.hostile.conftest import auth_headers

pytestmark = pytest.mark.integration

BODY_OPERATIONS = [
    ("post", "/jobs"),
    ("post", "/jobs:batch"),
    ("post", "/dead-letters/redrive"),
    ("post", "/dead-letters/purge"),
    ("post", "/schedules"),
]


async def test_a_time_that_overflows_in_utc_is_a_422_not_a_500(
    gateway: httpx.AsyncClient, api_key: str | None
) -> None:
    gateway.headers.update(auth_headers(api_key))
    # 0001-01-01T00:00+00:01 is in year 0 once in UTC: it raised OverflowError (500).
    body = {"filter": {"since": "0001-01-01T00:00:00+00:01"}}

    redrive = await gateway.post("/dead-letters/redrive", json=body)
    submit = await gateway.post(
        "/jobs", json={"type": "echo", "run_at": "9999-12-31T23:00:00-05:00"}
    )

    assert redrive.status_code == 422, redrive.text
    assert "out of range once converted to UTC" in redrive.text
    assert submit.status_code == 422, submit.text


async def test_a_body_that_is_not_utf8_gets_the_documented_400(
    gateway: httpx.AsyncClient, api_key: str | None
) -> None:
    gateway.headers.update(auth_headers(api_key))
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


async def test_every_operation_that_needs_a_key_documents_401_and_403(
    gateway: httpx.AsyncClient,
) -> None:
    # Found by schemathesis's invalid mode, which sends no key: 401 was undocumented.
    document = (await gateway.get("/openapi.json")).json()

    secured = {
        f"{method.upper()} {path}": set(operation["responses"])
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if operation.get("security")
    }
    open_ = {
        f"{method.upper()} {path}"
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if not operation.get("security")
    }

    assert len(secured) >= 20
    assert {op for op, codes in secured.items() if not {"401", "403"} <= codes} == set()
    assert open_ == {"GET /healthz", "GET /readyz", "GET /metrics"}
    assert "429" in secured["POST /jobs"] and "429" in secured["POST /jobs:batch"]
