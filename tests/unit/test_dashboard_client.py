"""The dashboard's pure parts: the gateway client's error translation and what the pages
compute from the gateway's JSON (no Streamlit runtime, no network)."""

from __future__ import annotations

import ast
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from streamlit_app import data
from streamlit_app.client import GatewayClient, GatewayRefused, GatewayUnavailable
from streamlit_app.views.job import rejected_notes, timeline_table
from streamlit_app.views.overview import lag_problems, latency_table, queue_table, throughput_frame
from streamlit_app.views.submit import parse_payload
from streamlit_app.views.workers import workers_table

VIEWS = Path(__file__).resolve().parents[2] / "streamlit_app" / "views"
NOW = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)


def client_answering(handler: httpx.MockTransport) -> GatewayClient:
    return GatewayClient("http://gateway.test", transport=handler)


def test_no_answer_from_the_gateway_is_gateway_unavailable_naming_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        client_answering(httpx.MockTransport(refuse)) as client,
        pytest.raises(GatewayUnavailable, match=r"http://gateway\.test.*ConnectError"),
    ):
        client.queues()


def test_a_422_becomes_gateway_refused_with_each_field_error() -> None:
    detail = [
        {"loc": ["body", "payload", "to", 0], "msg": "not an address", "type": "value_error"},
        {"loc": ["body", "type"], "msg": "String should match pattern", "type": "x"},
    ]

    def answer(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content) == {"type": "email", "payload": {}, "queue": "q"}
        return httpx.Response(422, json={"detail": detail})

    with (
        client_answering(httpx.MockTransport(answer)) as client,
        pytest.raises(GatewayRefused) as refused,
    ):
        client.submit("email", {}, "q")

    assert refused.value.status_code == 422
    assert refused.value.reason == (
        "payload.to.0: not an address; type: String should match pattern"
    )


def test_a_503_keeps_the_gateways_reason() -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(503, json={"detail": "NATS is unreachable"})
    )
    with client_answering(transport) as client, pytest.raises(GatewayRefused) as refused:
        client.job_events("j1")
    assert (refused.value.status_code, refused.value.reason) == (503, "NATS is unreachable")


def test_list_filters_that_are_not_set_are_not_sent() -> None:
    seen: list[httpx.URL] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    with client_answering(httpx.MockTransport(answer)) as client:
        client.jobs(status="failed", limit=10)

    assert dict(seen[0].params) == {"status": "failed", "limit": "10"}


def test_queue_table_totals_every_status_and_treats_missing_ones_as_zero() -> None:
    table = queue_table([{"queue": "default", "counts": {"pending": 2, "failed": 1}}])
    assert table.loc["default"].to_dict() == {
        "pending": 2,
        "running": 0,
        "completed": 0,
        "failed": 1,
        "canceled": 0,
        "total": 3,
    }


def test_throughput_sums_queues_and_types_per_minute_and_fills_quiet_minutes() -> None:
    row = {"succeeded": 0, "failed": 0}
    metrics = {
        "since": "2026-01-01T11:57:10Z",
        "until": "2026-01-01T12:00:30Z",
        "minutes": [
            {**row, "minute": "2026-01-01T11:58:00Z", "succeeded": 3, "failed": 1},
            {**row, "minute": "2026-01-01T11:58:00Z", "succeeded": 2},
            {**row, "minute": "2026-01-01T12:00:00Z", "failed": 4},
        ],
    }
    frame = throughput_frame(metrics)
    assert frame["succeeded"].tolist() == [0, 5, 0, 0]
    assert frame["failed"].tolist() == [0, 1, 0, 4]


def test_latency_table_formats_milliseconds_and_marks_missing_percentiles() -> None:
    table = latency_table({"wait_ms_p50": 1.23, "wait_ms_p95": 45.6, "run_ms_p99": 2500.0})
    assert table.loc["wait (queued → started)"].tolist() == ["1.2 ms", "46 ms", "—"]
    assert table.loc["run (started → finished)"].tolist() == ["—", "—", "2.50 s"]


def projection(**fields: object) -> dict[str, object]:
    base = {"name": "jobs", "stream": "FQ_EVENTS", "position": 10, "lag_events": 0}
    return {**base, "last_applied_at": "2026-01-01T12:00:00Z", **fields}


def test_lag_warns_only_when_a_projection_is_behind_and_has_not_moved_for_a_while() -> None:
    assert lag_problems([projection()], NOW) == []
    assert lag_problems([projection(lag_events=5)], NOW) == []  # applied 30 s ago: catching up
    [stuck] = lag_problems([projection(lag_events=5, last_applied_at="2026-01-01T11:50:00Z")], NOW)
    assert "5 events behind" in stuck and "10 min" in stuck
    [unknown] = lag_problems([projection(lag_events=None)], NOW)
    assert "cannot reach NATS" in unknown


def test_events_for_jobs_never_created_point_the_operator_to_verify() -> None:
    assert lag_problems([projection(orphan_events=0, lost_deliveries=3)], NOW) == []
    [orphans] = lag_problems([projection(orphan_events=2, last_problem="2 event(s) ...")], NOW)
    assert "2 event(s) for jobs it never saw created" in orphans
    assert "fq projections verify" in orphans


def test_workers_are_listed_stale_first_then_healthy_then_gone() -> None:
    def worker(worker_id: str, health: str) -> dict[str, object]:
        return {
            "worker_id": worker_id,
            "health": health,
            "queues": ["default"],
            "in_flight": 1,
            "concurrency": 4,
            "processed": 7,
            "failed": 2,
            "last_seen_at": "2026-01-01T12:00:28Z",
            "started_at": "2026-01-01T11:00:00Z",
            "hostname": "h",
            "pid": 1,
        }

    table = workers_table(
        [worker("a", "gone"), worker("b", "healthy"), worker("c", "stale")], now=NOW
    )
    assert table[["worker", "health"]].values.tolist() == [
        ["c", "stale"],
        ["b", "healthy"],
        ["a", "gone"],
    ]
    assert table["in flight"].iloc[0] == "1 / 4"
    assert table["last seen"].iloc[0] == "2.0 s ago"


def test_timeline_flags_rejected_events_with_the_folds_note() -> None:
    def entry(seq: int, event: str, at: str, applied: bool = True, note: str | None = None):
        return {"seq": seq, "event": event, "at": at, "applied": applied, "note": note}

    events = [
        entry(1, "submitted", "2026-01-01T12:00:00Z"),
        entry(2, "succeeded", "2026-01-01T12:00:01.5Z"),
        entry(3, "canceled", "2026-01-01T12:00:02Z", applied=False, note="job is completed"),
    ]
    table = timeline_table(events)
    assert table["after"].tolist() == ["+0.000 s", "+1.500 s", "+2.000 s"]
    assert table["applied"].tolist() == ["✓", "✓", "✗ rejected"]
    assert rejected_notes(events) == [
        "Event #3 `canceled` was recorded but not applied: job is completed"
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [("{", "not valid JSON"), ("[1]", "must be a JSON object, not list")],
)
def test_a_payload_that_is_not_a_json_object_is_refused_before_posting(
    text: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_payload(text)


def test_an_empty_payload_is_an_empty_object() -> None:
    assert parse_payload("  ") == {}
    assert parse_payload('{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("page", sorted(VIEWS.glob("[!_]*.py")), ids=lambda p: p.name)
def test_page_scripts_hold_no_bare_strings_that_streamlit_magic_would_print(page: Path) -> None:
    """Streamlit writes every bare expression of a page script to the page ("magic"),
    attribute docstrings included; only a module's or function's own docstring is spared."""
    tree = ast.parse(page.read_text())
    bare = [
        node.lineno
        for parent in ast.walk(tree)
        if isinstance(body := getattr(parent, "body", None), list)
        for index, node in enumerate(body)
        if isinstance(node, ast.Expr)
        and not isinstance(node.value, ast.Call | ast.Await)
        and not (index == 0 and isinstance(parent, ast.Module | ast.FunctionDef))
    ]
    assert bare == []


def test_the_dashboard_reads_with_its_own_key_from_fq_dashboard_api_key_or_var_dashboard_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json=[])

    with GatewayClient(
        "http://gateway.test", transport=httpx.MockTransport(answer), api_key="fq_k"
    ) as client:
        client.queues()
    assert seen == ["Bearer fq_k"]

    for name in [n for n in os.environ if n.startswith("FQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    assert data._client("http://gateway.test")._http.headers.get("Authorization") is None
    (tmp_path / "var").mkdir()
    # The operator's keys are never the dashboard's: neither the admin key nor FQ_API_KEY.
    (tmp_path / "var" / "admin.key").write_text("fq_admin\n")
    monkeypatch.setenv("FQ_API_KEY", "fq_operator")
    assert data._client("http://gateway.test")._http.headers.get("Authorization") is None
    (tmp_path / "var" / "dashboard.key").write_text("fq_from_file\n")
    assert data._client("http://gateway.test")._http.headers["Authorization"] == (
        "Bearer fq_from_file"
    )
    monkeypatch.setenv("FQ_DASHBOARD_API_KEY", "fq_from_env")
    assert data._client("http://gateway.test")._http.headers["Authorization"] == (
        "Bearer fq_from_env"
    )
