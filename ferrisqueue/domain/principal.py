"""Who is calling the gateway: an authenticated principal and the scopes it holds.

A scope names one kind of action; each gateway route needs exactly one (the table is in
``docs/security.md``). Scope names are part of the API (keys in the key store carry them):
new ones may be added, none renamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    """What a key may do."""

    JOBS_WRITE = "jobs:write"
    """Submit jobs (``POST /jobs``, ``POST /jobs/batch``); counted by the key's rate limit."""
    JOBS_READ = "jobs:read"
    """Read jobs, their events, queues, job types and dead letters."""
    JOBS_CANCEL = "jobs:cancel"
    """Cancel a job."""
    DLQ_ADMIN = "dlq:admin"
    """Redrive or purge dead letters."""
    SCHEDULES_ADMIN = "schedules:admin"
    """Create, pause, resume or delete periodic schedules."""
    QUEUES_ADMIN = "queues:admin"
    """Pause or resume a queue (its workers stop or go on starting its jobs), set its limits."""
    OPS_READ = "ops:read"
    """Read the operational views: workers, throughput, projections, schedules."""


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)
"""Every scope: what the admin key holds."""


def parse_scopes(values: list[str] | tuple[str, ...]) -> frozenset[Scope]:
    """Scopes from their names (``"*"`` or ``"all"`` for every scope); ``ValueError`` names
    the unknown ones."""
    if any(v in ("*", "all") for v in values):
        return ALL_SCOPES
    unknown = [v for v in values if v not in Scope.__members__.values()]
    if unknown:
        known = ", ".join(s.value for s in Scope)
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {known}")
    return frozenset(Scope(v) for v in values)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the API key it presented, by name and id, and its scopes."""

    name: str
    scopes: frozenset[Scope]
    key_id: str | None

    @property
    def actor(self) -> str:
        """How events name this caller: ``key:<name>``."""
        return f"key:{self.name}"

    def may(self, scope: Scope) -> bool:
        """Whether this principal holds ``scope``."""
        return scope in self.scopes
