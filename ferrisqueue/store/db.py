"""Engines for the read store: SQLite (default, WAL) or PostgreSQL via ``FQ_DATABASE_URL``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlmodel import SQLModel

from ferrisqueue.store import models  # noqa: F401 - registers the tables on the metadata


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for SQLite, the file's folder is created and WAL switched on."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


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
    """Create missing tables (idempotent)."""
    SQLModel.metadata.create_all(engine)
