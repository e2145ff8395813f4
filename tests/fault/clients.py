"""The fault tests' clients: they submit jobs the way a careful producer does and write what
they learn into a :class:`~tests.support.history.History`.

* :class:`Producer` submits over HTTP with an ``Idempotency-Key`` per op, puts the op's id
  into the payload (so the checker recognises the job even if the 202 never arrived), and
  retries an unknown outcome (503, timeout, dropped connection) with the *same* key.
* :func:`publish_raw` publishes straight to JetStream, as a producer using ``nats`` does.
* :class:`Pacer` spaces ops at a steady rate, for the tests that are about sustained load.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from ferrisqueue.domain.subjects import EVENT_STREAM, job_subject
from tests.support.history import OP_MARKER, History, Op

RETRY_PAUSE = 0.5
"""A client's pause before retrying when the answer named no Retry-After (a dropped connection)."""


class Producer:
    """Submits jobs through the gateway and records every answer."""

    def __init__(self, http: httpx.AsyncClient, history: History) -> None:
        self.http = http
        self.history = history
        self.statuses: Counter[int] = Counter()
        self.unhelpful_503s = 0
        """503 answers without a Retry-After header (the gateway must always send one)."""

    async def submit(
        self,
        op_id: str,
        job: dict[str, Any],
        *,
        expect: tuple[str, ...] = ("completed",),
        key: str | None = None,
        retry_for: float = 0.0,
    ) -> Op:
        """One op: POST /jobs until a definite answer, or ``retry_for`` seconds have passed.

        ``key`` is the Idempotency-Key (default: the op id); every retry reuses it.
        """
        op = self.history.invoke(op_id, expect=expect)
        body = {**job, "payload": {**job.get("payload", {}), OP_MARKER: op_id}}
        headers = {"Idempotency-Key": key or op_id}
        deadline = time.monotonic() + retry_for
        while True:
            pause = RETRY_PAUSE
            try:
                answer = await self.http.post("/jobs", json=body, headers=headers)
            except httpx.TransportError as exc:  # no answer: the job may or may not be stored
                how = type(exc).__name__
            else:
                self.statuses[answer.status_code] += 1
                if answer.status_code == 202:
                    self.history.accepted(op_id, answer.json()["job_id"])
                    return op
                if 400 <= answer.status_code < 500:
                    self.history.rejected(op_id, str(answer.status_code))
                    return op
                how = str(answer.status_code)
                if answer.status_code == 503 and "retry-after" in answer.headers:
                    pause = float(answer.headers["retry-after"])
                elif answer.status_code == 503:
                    self.unhelpful_503s += 1
            self.history.unknown(op_id, how)
            if time.monotonic() + pause > deadline:
                return op
            await asyncio.sleep(pause)  # the client's backoff, as Retry-After asks

    def server_errors(self) -> dict[int, int]:
        """Answers in the 5xx range other than 503 (there must be none)."""
        return {code: n for code, n in self.statuses.items() if code >= 500 and code != 503}


async def publish_raw(
    nc: Client,
    history: History,
    op_id: str,
    job_id: str,
    data: bytes,
    *,
    expect: tuple[str, ...],
    event: str = "submitted",
    queue: str = "default",
) -> Op:
    """Publish ``data`` on the job's subject straight to JetStream, as `nats pub` would."""
    op = history.invoke(op_id, expect=expect, job_id=job_id)
    try:
        await nc.jetstream().publish(
            job_subject(queue, job_id, event), data, stream=EVENT_STREAM, timeout=5
        )
    except (nats.errors.MaxPayloadError, nats.js.errors.APIError) as exc:
        history.rejected(op_id, type(exc).__name__)
    except (TimeoutError, nats.errors.TimeoutError):
        history.unknown(op_id, "timeout")
    else:
        history.accepted(op_id, job_id, "ack")
    return op


class Pacer:
    """Lets ops start at a steady ``rate`` per second.

    This is load shaping, not synchronisation: a test about *sustained* load (an outage in
    the middle of a stream of submissions) needs the stream to be spread over time.
    """

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()

    async def tick(self) -> None:
        self._next += self._interval
        delay = self._next - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
