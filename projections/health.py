"""The projections' divergence signals: counters in the read store's ``projection_health``.

They count what could make the store differ from the log, as the projector notices it:
deliveries lost in transit (then filled from the log), batches refused because another
projector moved the checkpoint, and events for jobs the store never saw. Kept in the store,
they survive restarts and every gateway replica reports the same numbers
(``GET /projections``); each one is also logged as a warning when it happens.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from ferrisqueue.store.models import ProjectionHealth

log = logging.getLogger(__name__)

_TABLE = ProjectionHealth.__table__  # type: ignore[attr-defined]
_COUNTERS = ("lost_deliveries", "checkpoint_moves", "orphan_events")


def count(session: Session, projection: str, problem: str, at: datetime, **counters: int) -> None:
    """Add ``counters`` (names of :class:`ProjectionHealth`'s counters) to ``projection``'s
    row in the session's transaction, and note ``problem`` as its latest; not committed."""
    unknown = counters.keys() - set(_COUNTERS)
    if unknown:
        raise ValueError(f"not a projection health counter: {sorted(unknown)}")
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    row = {name: counters.get(name, 0) for name in _COUNTERS}
    statement = dialect.insert(_TABLE).values(
        name=projection, last_problem=problem, last_problem_at=at, **row
    )
    added = {name: _TABLE.c[name] + statement.excluded[name] for name in counters}
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["name"],
            set_={
                **added,
                "last_problem": statement.excluded.last_problem,
                "last_problem_at": statement.excluded.last_problem_at,
            },
        )
    )
    log.warning("%s projection: %s", projection, problem)


def record(engine: Engine, projection: str, problem: str, at: datetime, **counters: int) -> None:
    """:func:`count` in a transaction of its own (for what happened outside a batch)."""
    with Session(engine) as session:
        count(session, projection, problem, at, **counters)
        session.commit()
