"""Dead-lettering one job: keep its original message in ``FQ_DLQ`` and mark it in the log.

Three paths end here: the scheduler's router (a job that reached MaxDeliver), a worker that
ran out of attempts or hit a permanent error, and a worker that received a message it could
not decode. Each copies the original bytes to ``fq.dlq.<queue>.<job_id>`` with the reason and
the job's lineage in ``Fq-*`` headers (a message too large to copy beside them is cut, with
``Fq-Truncated: <its size>``), then appends ``dead_lettered``. A crash between the two is
repaired by doing both again: the copy's ``Nats-Msg-Id`` is deterministic (stored once within
the 2-minute duplicate window), the event's is time-based, so a repair may store a second
``dead_lettered``, which the fold rejects ("already dead-lettered": recorded in the timeline,
counted once).
"""

from __future__ import annotations

from collections.abc import Mapping

from ferrisqueue.domain.events import DeadLettered, utcnow
from ferrisqueue.domain.subjects import DLQ_STREAM, dlq_subject
from ferrisqueue.errors import PayloadTooLarge
from ferrisqueue.log.eventlog import EventLog

_HEADER_LIMIT = 1000


def header_value(text: str) -> str:
    """``text`` made safe for a NATS header: one line, bounded length."""
    return text[:_HEADER_LIMIT].replace("\r", " ").replace("\n", " ")


async def dead_letter(
    event_log: EventLog,
    *,
    queue: str,
    job_id: str,
    original: bytes,
    reason: str,
    dedup: str,
    actor: str,
    lineage: Mapping[str, str | int | None] = {},
) -> None:
    """Copy ``original`` to the dead-letter stream and append ``dead_lettered``, whose
    actor is ``actor`` (the worker or the scheduler that gave up on the job).

    ``dedup`` names this dead-lettering (e.g. the stream sequence of the message given up
    on); ``lineage`` becomes ``Fq-<Name>`` headers (``{"Attempts": 3}`` -> ``Fq-Attempts``).
    """
    headers = {
        "Nats-Msg-Id": f"{job_id}:dlq:{dedup}",
        "Fq-Reason": header_value(reason),
        **{f"Fq-{name}": header_value(str(value)) for name, value in lineage.items() if value},
    }
    subject = dlq_subject(queue, job_id)
    try:
        await event_log.publish(subject, original, stream=DLQ_STREAM, headers=headers)
    except PayloadTooLarge:
        # A raw message close to the 1 MiB limit does not fit beside its lineage headers:
        # keep its beginning and say so. All of it stays in the log at Fq-Stream-Seq.
        headers["Fq-Truncated"] = str(len(original))
        keep = event_log.body_room(stream=DLQ_STREAM, headers=headers)
        await event_log.publish(subject, original[:keep], stream=DLQ_STREAM, headers=headers)
    await event_log.append(
        DeadLettered(job_id=job_id, queue=queue, at=utcnow(), reason=reason, actor=actor)
    )
