"""Idempotency keys: the same ``Idempotency-Key`` always names the same job.

A key is claimed in a JetStream key-value bucket (``FQ_IDEMPOTENCY``, defined under
``nats/jetstream/streams/``) with an atomic create: of any number of concurrent requests
with one key, exactly one creates the entry and the others read the job id it holds. The
entry also holds a fingerprint of the request, so reusing a key for another job is refused.
Entries live 24 hours (the bucket's ``max_age``), far beyond JetStream's 2-minute duplicate
window, which is why this does not rely on ``Nats-Msg-Id`` alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from ferrisqueue.errors import IdempotencyConflict, NatsUnavailable

BUCKET = "FQ_IDEMPOTENCY"
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Claim:
    """The job a key names, and whether this request made the claim."""

    job_id: str
    first: bool


def fingerprint(request: object) -> str:
    """A stable digest of a request body (keys sorted, no white space)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyKeys:
    """Claims keys in the bucket; create it first (``fq init`` / the services' topology)."""

    def __init__(self, nc: Client) -> None:
        self._js = nc.jetstream()

    async def claim(self, key: str, request_fingerprint: str, job_id: str) -> Claim:
        """Claim ``key`` for ``job_id``, or return the job it already names.

        Raises :class:`IdempotencyConflict` when the key was used for a different request.
        """
        # Keys are hashed: clients may use any characters, KV keys may not.
        name = hashlib.sha256(key.encode()).hexdigest()
        value = json.dumps({"job_id": job_id, "fingerprint": request_fingerprint}).encode()
        try:
            bucket = await self._js.key_value(BUCKET)
            try:
                await bucket.create(name, value)
                return Claim(job_id, True)
            except nats.js.errors.KeyWrongLastSequenceError:
                stored = json.loads((await bucket.get(name)).value or b"{}")
        except (TimeoutError, nats.errors.Error) as exc:
            raise NatsUnavailable(f"cannot claim the idempotency key: {exc!r}") from exc
        if stored.get("fingerprint") != request_fingerprint:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request body"
            )
        return Claim(str(stored["job_id"]), False)
