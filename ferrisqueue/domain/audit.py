"""A job's audit trail: every stored message of the job, who did what and when, and what
the fold made of it (applied, or rejected and why). Pure: built from the log's messages.

The actor is the event's own ``actor`` (older shapes already read into it by the event
schema); only an undecodable message has none."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ferrisqueue.domain.fold import JobState, apply
from ferrisqueue.domain.stored import StoredEvent


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the trail."""

    seq: int
    event: str
    at: datetime
    stored_at: datetime
    actor: str | None
    applied: bool
    status_after: str | None
    note: str | None
    body: dict[str, Any] | None
    raw: str | None


def audit_trail(history: list[StoredEvent]) -> list[AuditEntry]:
    """Replay ``history`` (one job's messages, in log order) through the fold."""
    state: JobState | None = None
    trail = []
    for stored in history:
        event = stored.event
        if event is None:
            trail.append(
                AuditEntry(
                    seq=stored.seq,
                    event=stored.subject.rsplit(".", 1)[-1],
                    at=stored.stored_at,
                    stored_at=stored.stored_at,
                    actor=None,
                    applied=False,
                    status_after=state.status.value if state else None,
                    note=f"undecodable: {stored.error.reason if stored.error else '?'}",
                    body=None,
                    raw=stored.data.decode("utf-8", errors="replace"),
                )
            )
            continue
        transition = apply(state, event)
        state = transition.state
        body = event.model_dump(mode="json", exclude_none=True)
        trail.append(
            AuditEntry(
                seq=stored.seq,
                event=event.kind.value,
                at=event.at,
                stored_at=stored.stored_at,
                actor=event.actor,
                applied=transition.applied,
                status_after=state.status.value if state else None,
                note=transition.rejected_because,
                body=body,
                raw=None,
            )
        )
    return trail
