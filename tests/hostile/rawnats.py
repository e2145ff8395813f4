"""Hostile messages for the event log, made from a seeded random source: what a raw `nats pub`
producer could publish under ``fq.job.>``. Pure: the same seed makes the same messages.

Subjects: every event kind and unknown ones, on the consumed queue and others, with valid
job ids, malformed tokens (unicode, too long, punctuation) and the wrong number of tokens.
Bodies: random bytes, broken JSON, JSON of the wrong shape, event bodies with fields mutated
(huge, negative, unicode, out-of-range times, deep nesting), bodies over the stream's limit.
Headers: JetStream's own (``Nats-Msg-Id``, ``Nats-Expected-*``, ``Nats-Rollup``,
``Nats-TTL``, ``Nats-Schedule*``), FerrisQueue's (``Fq-*``, ``traceparent``) and random ones.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from typing import Any

from ferrisqueue.domain.events import EventKind
from ferrisqueue.domain.ids import new_job_id

QUEUE = "default"
"""The queue the workers under test consume."""

KINDS = [kind.value for kind in EventKind]
_TOKEN_CHARS = string.ascii_letters + string.digits + "_-"
_ODD_TOKENS = ["é", "ジョブ", "a" * 65, "a:b", "a/b", "$", "%20", "🦀", "a,b", "{}", "'"]
_FQ_HEADERS = [
    "Fq-Reason",
    "Fq-Stream-Seq",
    "Fq-Attempts",
    "Fq-Last-Worker",
    "Fq-Last-Error",
    "Fq-Truncated",
    "Fq-Actor",
    "traceparent",
    "tracestate",
]
_NATS_HEADERS = [
    "Nats-Msg-Id",
    "Nats-Expected-Stream",
    "Nats-Expected-Last-Sequence",
    "Nats-Expected-Last-Subject-Sequence",
    "Nats-Expected-Last-Subject-Sequence-Subject",
    "Nats-Expected-Last-Msg-Id",
    "Nats-Rollup",
    "Nats-TTL",
    "Nats-Schedule",
    "Nats-Schedule-Target",
]


@dataclass(frozen=True)
class RawMessage:
    """One message to publish as it is."""

    subject: str
    data: bytes
    headers: dict[str, str]


def _token(rng: random.Random) -> str:
    return "".join(rng.choice(_TOKEN_CHARS) for _ in range(rng.randint(1, 12)))


def _subject(rng: random.Random) -> str:
    roll = rng.random()
    queue = QUEUE if rng.random() < 0.7 else rng.choice([_token(rng), *_ODD_TOKENS])
    job_id = new_job_id() if rng.random() < 0.7 else rng.choice([_token(rng), *_ODD_TOKENS])
    kind = rng.choice(KINDS) if rng.random() < 0.8 else rng.choice([_token(rng), "Submitted"])
    if roll < 0.85:
        return f"fq.job.{queue}.{job_id}.{kind}"
    if roll < 0.9:
        return f"fq.job.{queue}"
    if roll < 0.95:
        return f"fq.job.{queue}.{job_id}"
    return f"fq.job.{queue}.{job_id}.{kind}.{_token(rng)}"


def _text(rng: random.Random, size: int) -> str:
    alphabet = string.printable + "é漢字🦀\u200b\u202e\x00\ufffd"
    return "".join(rng.choice(alphabet) for _ in range(size))


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 2**63, -(2**64), 10**400, rng.randint(-(10**9), 10**9)])
    if pick == 3:
        return rng.choice([0.5, -1e308, 1e-320, rng.uniform(-1e6, 1e6)])
    if pick in (4, 5):
        return _text(rng, rng.randint(0, 40))
    if pick in (6, 7):
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_text(rng, 6): _json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


_TIMES = [
    "2026-01-01T00:00:00Z",
    "0001-01-01T00:00:00+00:01",
    "9999-12-31T23:59:59-01:00",
    "2026-01-01T00:00:00",  # no timezone
    "yesterday",
    "2026-13-40T99:99:99Z",
]
_FIELDS = [
    "type",
    "payload",
    "at",
    "run_at",
    "retry_at",
    "delay",
    "attempt",
    "max_attempts",
    "timeout",
    "worker",
    "error",
    "result",
    "schema_version",
    "queue",
    "job_id",
    "event",
    "retry",
    "reason",
    "submitted_by",
]


def _event_body(rng: random.Random) -> dict[str, Any]:
    """A plausible event body with some fields mutated."""
    body: dict[str, Any] = {"type": "echo", "payload": {}, "at": "2026-01-01T00:00:00Z"}
    for _ in range(rng.randint(0, 4)):
        field = rng.choice(_FIELDS)
        body[field] = (
            rng.choice(_TIMES) if field.endswith("at") and rng.random() < 0.7 else _json_value(rng)
        )
    return body


def _body(rng: random.Random) -> bytes:
    pick = rng.randrange(10)
    if pick == 0:
        return rng.randbytes(rng.randint(0, 300))
    if pick == 1:
        whole = json.dumps(_event_body(rng)).encode()
        return whole[: rng.randint(0, max(len(whole) - 1, 0))]  # broken JSON
    if pick == 2:
        return json.dumps(_json_value(rng)).encode()  # any shape
    if pick == 3:
        return rng.choice([b"[" * 100_000, b'{"a":' * 50_000, b"", b" ", b"null", b"\xff\xfe"])
    if pick == 4:  # huge values: near and past the event limit, past the stream's 1 MiB
        size = rng.choice([200_000, 600_000, 1_100_000])
        return json.dumps({"type": "echo", "payload": {"x": "a" * size}}).encode()
    if pick == 5:
        return json.dumps(_event_body(rng), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return json.dumps(_event_body(rng)).encode()


def _header_value(rng: random.Random, name: str) -> str:
    pick = rng.randrange(4)
    if name.startswith("Nats-Expected-Last") and pick < 2:
        return str(rng.choice([0, 1, 2, 10**6, -1]))
    if name == "Nats-Expected-Stream" and pick < 2:
        return rng.choice(["FQ_EVENTS", "FQ_DLQ", "nope"])
    if name == "Nats-Msg-Id" and pick < 2:
        return rng.choice(["same-id", f"{new_job_id()}:submitted"])
    if pick == 3:
        return "x" * rng.randint(1000, 5000)
    # No CR, LF or leading/trailing space: those would break the protocol, not FerrisQueue.
    return _text(rng, rng.randint(1, 30)).replace("\r", "").replace("\n", "").strip() or "v"


def _headers(rng: random.Random) -> dict[str, str]:
    if rng.random() < 0.4:
        return {}
    names = rng.sample(_NATS_HEADERS + _FQ_HEADERS, k=rng.randint(1, 3))
    if rng.random() < 0.3:
        names.append("X-" + _token(rng))
    return {name: _header_value(rng, name) for name in names}


def hostile_messages(seed: int, count: int) -> list[RawMessage]:
    """``count`` messages from ``seed``."""
    rng = random.Random(seed)
    return [RawMessage(_subject(rng), _body(rng), _headers(rng)) for _ in range(count)]
