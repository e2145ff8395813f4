"""The one rooted error tree.

Library exceptions (nats-py, SQLAlchemy) are translated into these at the adapter that calls
the library, so callers handle FerrisQueue's vocabulary only.
"""

from __future__ import annotations


class FerrisQueueError(Exception):
    """Root of every error FerrisQueue raises on purpose."""


class ConfigurationError(FerrisQueueError):
    """Settings or the environment are unusable (a port taken, a server too old, ...)."""


class NatsUnavailable(FerrisQueueError):
    """No connection to NATS right now; the caller may retry later."""


class PublishRejected(FerrisQueueError):
    """JetStream answered and refused the message: it was definitely not stored."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code
        """JetStream's error code (``err_code``), when it gave one."""


class ConcurrentChange(PublishRejected):
    """A guarded append found the job's log moved on since it was read (someone else
    appended an event): re-read the job and decide again."""


class CheckpointMoved(FerrisQueueError):
    """A projection's checkpoint in the read store is not where this projector left it
    (another projector wrote the store meanwhile): nothing of the batch was committed, and
    the projection must resume from the stored checkpoint."""


class BackupFailed(FerrisQueueError):
    """A stream backup or restore did not complete (refused by the server, stalled, or
    its files are missing or unreadable); nothing it wrote is to be trusted."""


class PublishOutcomeUnknown(FerrisQueueError):
    """No answer in time: the message may or may not be stored.

    A timeout is *unknown*, never *failed*: retry with the same ``Nats-Msg-Id`` and JetStream
    stores it once.
    """


class PayloadTooLarge(FerrisQueueError):
    """An event would exceed the size limit (``FQ_MAX_EVENT_BYTES`` or the server's)."""


class IdempotencyConflict(FerrisQueueError):
    """An idempotency key was reused for a different request."""


class DecodeError(FerrisQueueError):
    """A message on an FerrisQueue subject could not be decoded into an event.

    Keeps the raw bytes and the subject so the message can be dead-lettered as it arrived.
    """

    def __init__(self, reason: str, *, subject: str, data: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.subject = subject
        self.data = data


class JobError(FerrisQueueError):
    """Base for what a task handler may raise to steer what happens to its job."""


class Permanent(JobError):
    """The job cannot succeed however often it runs: fail it without retrying."""


class UnknownJobType(Permanent):
    """No task is registered for the job's type on this worker."""
