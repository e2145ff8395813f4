"""Admission control (gateway/admission.py) as an ASGI middleware: which requests it sheds,
how it answers them, and that it counts what it admits until they are answered."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from ferrisqueue.settings import Settings
from gateway.admission import Admission
from gateway.limits import HEAD_AT
from gateway.metrics import shed_counter

pytestmark = pytest.mark.timeout(10)


class HeldApp:
    """An app that answers 202 once ``release`` is set; counts the requests it got and sets
    ``all_in`` once ``expected`` of them are in."""

    def __init__(self, expected: int = 0) -> None:
        self.release = asyncio.Event()
        self.all_in = asyncio.Event()
        self.expected = expected
        self.entered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered += 1
        if self.entered == self.expected:
            self.all_in.set()
        await self.release.wait()
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def http(method: str, path: str, **extra: Any) -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": [], **extra}


async def call(app: Admission, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def status_of(sent: list[Message]) -> int:
    return int(sent[0]["status"])


async def test_past_the_limit_submissions_get_503_and_others_pass() -> None:
    inner = HeldApp(expected=2)
    registry = CollectorRegistry()
    app = Admission(
        inner, max_inflight=2, max_wait=None, retry_after=3, shed=shed_counter(registry)
    )

    held = [asyncio.create_task(call(app, http("POST", p))) for p in ("/jobs", "/jobs:batch")]
    await inner.all_in.wait()
    refused = await call(app, http("POST", "/jobs"))
    refused_batch = await call(app, http("POST", "/jobs:batch"))
    read = asyncio.create_task(call(app, http("GET", "/jobs")))
    cancel = asyncio.create_task(call(app, http("POST", "/jobs/x/cancel")))
    inner.release.set()
    answered = await asyncio.gather(*held, read, cancel)

    assert [status_of(a) for a in answered] == [202, 202, 202, 202]
    for sent in (refused, refused_batch):
        assert status_of(sent) == 503
        headers = dict(sent[0]["headers"])
        assert headers[b"retry-after"] == b"3"
        assert headers[b"content-type"] == b"application/json"
        body = sent[1]["body"]
        assert int(headers[b"content-length"]) == len(body)
        assert "FQ_GATEWAY_MAX_INFLIGHT" in json.loads(body)["detail"]
    assert app.inflight == 0
    assert (
        registry.get_sample_value(
            "fq_http_requests_shed_total", {"route": "/jobs", "reason": "inflight"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "fq_http_requests_shed_total", {"route": "/jobs:batch", "reason": "inflight"}
        )
        == 1
    )
    # Once the burst is answered, submissions are admitted again.
    assert status_of(await call(app, http("POST", "/jobs"))) == 202


async def test_a_submission_that_waited_too_long_to_start_is_shed() -> None:
    inner = HeldApp()
    inner.release.set()
    app = Admission(inner, max_inflight=0, max_wait=0.05, retry_after=2)
    now = asyncio.get_running_loop().time()

    late = await call(app, http("POST", "/jobs", **{HEAD_AT: now - 1.0}))
    fresh = await call(app, http("POST", "/jobs", **{HEAD_AT: now + 1.0}))
    unknown = await call(app, http("POST", "/jobs"))  # no arrival time: admitted
    late_read = await call(app, http("GET", "/jobs", **{HEAD_AT: now - 1.0}))

    assert status_of(late) == 503
    assert "FQ_GATEWAY_MAX_QUEUE_WAIT" in json.loads(late[1]["body"])["detail"]
    assert [status_of(s) for s in (fresh, unknown, late_read)] == [202, 202, 202]
    assert inner.entered == 3


async def test_a_root_path_in_front_is_no_other_path() -> None:
    inner = HeldApp(expected=1)
    app = Admission(inner, max_inflight=1, max_wait=None, retry_after=2)
    held = asyncio.create_task(call(app, http("POST", "/api/jobs", root_path="/api")))
    await inner.all_in.wait()
    refused = await call(app, http("POST", "/api/jobs:batch", root_path="/api"))
    inner.release.set()
    assert status_of(refused) == 503
    assert status_of(await held) == 202


async def test_an_app_that_raises_frees_its_slot() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    app = Admission(broken, max_inflight=1, max_wait=None, retry_after=2)
    with pytest.raises(RuntimeError):
        await call(app, http("POST", "/jobs"))
    assert app.inflight == 0


def test_the_settings_refuse_negative_limits() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, gateway_max_inflight=-1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(_env_file=None, gateway_max_queue_wait=-0.1)  # type: ignore[call-arg]
    assert Settings(_env_file=None).gateway_max_inflight == 64  # type: ignore[call-arg]
