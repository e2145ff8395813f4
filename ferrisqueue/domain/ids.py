"""Job ids: time-ordered UUIDv7 strings that are also valid NATS subject tokens."""

from __future__ import annotations

import re

import uuid6

# A NATS subject token may not hold '.', '*', '>' or white space. We are stricter: ids,
# queue names and event names are plain words so that they read well in `nats stream view`.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_job_id() -> str:
    """A fresh UUIDv7: ids sort by creation time, which cursor pagination relies on."""
    return str(uuid6.uuid7())


def is_token(value: str) -> bool:
    """Whether ``value`` can stand as one token of a subject (job id, queue name)."""
    return bool(_TOKEN.fullmatch(value))
