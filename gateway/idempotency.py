"""Idempotency keys: the same ``Idempotency-Key`` always names the same job.

A key is claimed in a JetStream key-value bucket (``FQ_IDEMPOTENCY``, defined under
``ferrisqueue/log/jetstream/streams/``) with an atomic create: of any number of concurrent requests
with one key, exactly one creates the entry and the others read the job id it holds. The
entry also holds a fingerprint of the request, so reusing a key for another job is refused.
Entries live 24 hours (the bucket's ``max_age``), far beyond JetStream's 2-minute duplicate
window, which is why this does not rely on ``Nats-Msg-Id`` alone.

The bucket is a stream (``KV_FQ_IDEMPOTENCY``, one message per key on
``$KV.FQ_IDEMPOTENCY.<key>``), used through the log port the way nats-py's KV client does: a
create is a publish guarded by ``Nats-Expected-Last-Subject-Sequence: 0``, a get reads the
subject's last message. Nothing deletes a key (they expire), so no delete marker is ever met.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ferrisqueue.errors import ConcurrentChange, IdempotencyConflict, NatsUnavailable
from ferrisqueue.log.port import EXPECTED_LAST_SUBJECT_SEQ, LogPort

BUCKET = "FQ_IDEMPOTENCY"
_STREAM = f"KV_{BUCKET}"
_PREFIX = f"$KV.{BUCKET}."
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

    def __init__(self, log: LogPort) -> None:
        self._log = log

    async def claim(self, key: str, request_fingerprint: str, job_id: str) -> Claim:
        """Claim ``key`` for ``job_id``, or return the job it already names.

        Raises :class:`IdempotencyConflict` when the key was used for a different request.
        """
        # Keys are hashed: clients may use any characters, KV keys may not.
        subject = _PREFIX + hashlib.sha256(key.encode()).hexdigest()
        value = json.dumps({"job_id": job_id, "fingerprint": request_fingerprint}).encode()
        try:
            # Created only if the key holds nothing yet: of concurrent claims, one wins.
            await self._log.store(
                subject, value, headers={EXPECTED_LAST_SUBJECT_SEQ: "0"}, stream=_STREAM
            )
            return Claim(job_id, True)
        except ConcurrentChange:
            found = await self._log.read(_STREAM, subject)
        if found is None:  # expired between the two requests: the claim may be made again
            raise NatsUnavailable("the idempotency key expired while it was read; retry")
        stored = json.loads(found.data or b"{}")
        if stored.get("fingerprint") != request_fingerprint:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request body"
            )
        return Claim(str(stored["job_id"]), False)
