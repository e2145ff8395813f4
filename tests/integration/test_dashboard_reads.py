"""The dashboard's read routes (gateway/routes/insights.py) refuse bad input with a 422 and
the reason, on a real gateway; what they answer is read off the pages by
tests/e2e/test_dashboard_pages.py and checked against the store by
tests/unit/test_dashboard_store.py."""

from __future__ import annotations

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.mark.parametrize(
    ("path", "params", "where", "reason"),
    [
        ("/jobs/waiting", {"reason": "queued"}, "reason", "scheduled or retrying"),
        (
            "/jobs/waiting",
            {"cursor": "2026-01-01T00:00:00|job"},
            "cursor",
            "not a cursor of this list",
        ),
        (
            "/errors",
            {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            "since",
            "since must be before until",
        ),
        ("/errors/0123abcd/attempts", {"cursor": "x"}, "cursor", "not a sequence"),
    ],
)
async def test_bad_input_is_a_422_with_the_reason(
    gateway: httpx.AsyncClient, path: str, params: dict[str, str], where: str, reason: str
) -> None:
    answer = await gateway.get(path, params=params)
    assert answer.status_code == 422
    [error] = answer.json()["detail"]  # the documented shape of every 422
    assert (error["loc"], error["msg"]) == (["query", where], reason)


async def test_empty_store_answers_empty_pages(gateway: httpx.AsyncClient) -> None:
    waiting = (await gateway.get("/jobs/waiting", params={"reason": "retrying"})).json()
    assert waiting == {"items": [], "next_cursor": None, "counts": {}}
    assert (await gateway.get("/schedules/nightly/jobs")).json() == []
    queue = (await gateway.get("/stats/queues/default")).json()
    assert (queue["minutes"], queue["types"], queue["depth"], queue["depth_now"]) == (
        [],
        [],
        [],
        {},
    )
    errors = (await gateway.get("/errors")).json()
    assert errors["groups"] == [] and errors["bucket_seconds"] == 3600
