"""Engines for the read store: SQLite (default, WAL) or PostgreSQL via ``FQ_DATABASE_URL``.

Schema versioning: the read store is a projection of the event log, so it is never migrated
in place. ``schema_info.version`` names the layout; a process that finds another version
refuses to start and says to rebuild (``fq projections rebuild`` into a fresh database,
then point ``FQ_DATABASE_URL`` at it). Adding a table to a store of the same version is
done by ``create_all``, which only creates what is missing.
"""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Any

import pydantic_core
from sqlalchemy import Engine, create_engine, event, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.sql import Insert
from sqlmodel import Session, SQLModel

from ferrisqueue.errors import CheckpointMoved, ConfigurationError
from ferrisqueue.store import queries
from ferrisqueue.store.models import ProjectionCheckpoint, SchemaInfo

SCHEMA_VERSION = 4
"""The read-store layout this code reads and writes (2: ``dead_letters`` records redrives and
purges, and the last error; 3: ``job_events.actor``, who made each event happen; 4:
``job_events.body`` is the event's JSON text as published, not a re-serialised copy; the
dashboard's ``queue_depth``, ``queue_depth_minute`` and ``job_errors``, and ``jobs`` indexes)."""


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for SQLite, the file's folder is created and WAL switched on."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_serializer=_json_text,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, json_serializer=_json_text)


def _json_text(value: Any) -> str:
    """JSON columns serialised by pydantic-core: the projector writes two or three per event,
    and the standard library's encoder took about 4 % of its time. Same JSON, UTF-8 unescaped."""
    return pydantic_core.to_json(value).decode()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the gateway and dashboard read while the projector writes; NORMAL sync is
    # safe with WAL (a crash loses at most the last transactions, which the projector
    # re-applies from the log because its checkpoint rolls back with them).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def init_schema(engine: Engine) -> None:
    """Create missing tables and check the schema version (idempotent, safe to race)."""
    try:
        SQLModel.metadata.create_all(engine)
    except (IntegrityError, OperationalError, ProgrammingError):
        # Another process created the same tables at the same moment; the second try sees them.
        SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        found = session.get(SchemaInfo, "version")
        if found is None:
            session.add(SchemaInfo(key="version", value=SCHEMA_VERSION))
            try:
                session.commit()
                return
            except IntegrityError:
                session.rollback()
                found = session.get(SchemaInfo, "version")
        if found is not None and found.value != SCHEMA_VERSION:
            raise ConfigurationError(
                f"the read store at {engine.url.render_as_string(hide_password=True)} has schema "
                f"version {found.value}, this FerrisQueue needs {SCHEMA_VERSION}. Rebuild it from "
                "the event log: `fq projections rebuild --database-url <new url>`."
            )


@functools.cache
def upsert(dialect_name: str, table: Any, *keys: str, keep: tuple[str, ...] = ()) -> Insert:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` every other column but those to ``keep``
    as they are, on SQLite and PostgreSQL. Built once per table (a projector runs a few per
    batch; building one took half a millisecond)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(table)
    fixed = {*keys, *keep}
    columns = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in fixed}
    result: Insert = statement.on_conflict_do_update(index_elements=list(keys), set_=columns)
    return result


def checkpoint_at(session: Session, projection: str, *, expected: int | None = None) -> int:
    """``projection``'s checkpoint, read at the start of a batch's transaction; with
    ``expected``, :class:`CheckpointMoved` unless it is there (the batch was checked to
    follow that position)."""
    position = queries.checkpoint(session, projection)
    if expected is not None and position != expected:
        raise CheckpointMoved(
            f"the {projection} checkpoint is at {position}, not at {expected}: another "
            "projector wrote this read store"
        )
    return position


def commit_at(
    session: Session, projection: str, position: int, stored_at: datetime, *, after: int
) -> int:
    """Move ``projection``'s checkpoint from ``after`` to ``position`` and commit, together
    with whatever rows the session changed: the exactly-once step every projection ends its
    batch with.

    The move is fenced: it happens only if the stored checkpoint is still ``after`` (the one
    this batch was applied on top of). If another projector moved it meanwhile, nothing is
    committed and :class:`CheckpointMoved` is raised, so two projectors racing on one store
    can neither apply an event twice nor skip one. (On PostgreSQL the conditional UPDATE
    re-reads the row after any concurrent writer committed; on SQLite a writer that read a
    stale snapshot cannot commit at all.)
    """
    table = ProjectionCheckpoint.__table__  # type: ignore[attr-defined]
    if after == 0:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(table)
            .values(name=projection, position=position, updated_at=stored_at)
            .on_conflict_do_nothing(index_elements=["name"])
        )
    else:
        statement = (
            update(table)
            .where(table.c.name == projection, table.c.position == after)
            .values(position=position, updated_at=stored_at)
        )
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT DO NOTHING.
    if session.execute(statement.returning(table.c.name)).first() is None:
        session.rollback()
        raise CheckpointMoved(
            f"the {projection} checkpoint is no longer at {after}: another projector wrote "
            "this read store"
        )
    session.commit()
    return position
