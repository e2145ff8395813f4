"""Many rows in one go, in the cheapest way each database offers.

The projector writes two rows per event (its timeline row and its job's row). Handing them
to SQLAlchemy as dictionaries cost more than the database's own work: per row and column,
SQLAlchemy looks the parameter up, runs the column type's bind processor and builds the
driver's parameters (a third of the projector's time on SQLite, measured). A
:class:`BulkWriter` takes rows as tuples and does per-statement work once:

* **SQLite**: the statement is compiled once by SQLAlchemy, each column type's bind
  processor is applied only where a column needs one (times, JSON, booleans), and the rows
  go to ``sqlite3``'s ``executemany``, so SQLite stores exactly what SQLAlchemy would;
* **PostgreSQL**: ``COPY ... FROM STDIN`` (psycopg writes the rows in C); an upsert copies
  into a temporary table that empties at commit, then inserts from it with
  ``ON CONFLICT DO UPDATE``. psycopg's pipelined ``executemany`` spent more time in Python
  per row than PostgreSQL spent storing it.

Both run on the session's own connection, inside its transaction: the rows commit, or roll
back, with the checkpoint, so exactly-once is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pydantic_core
from sqlalchemy import JSON, Column, MetaData, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlmodel import Session

Row = Sequence[Any]


class BulkWriter:
    """Insert (or, with ``key``, upsert) tuples of ``columns`` into ``table``.

    An upsert updates every column but ``key`` and ``keep`` on a conflict."""

    def __init__(
        self,
        table: Table,
        columns: Sequence[str],
        dialect: Dialect,
        *,
        key: Sequence[str] = (),
        keep: Sequence[str] = (),
    ) -> None:
        self.columns = tuple(columns)
        self._write: Callable[[Any, list[Row]], None]
        if dialect.name == "postgresql":
            self._write = _PostgresCopy(table, self.columns, dialect, key, keep).write
        else:
            self._write = _ExecuteMany(table, self.columns, dialect, key, keep).write

    def execute(self, session: Session, rows: Sequence[Row]) -> None:
        """Write ``rows`` (tuples in :attr:`columns` order) in the session's transaction."""
        if rows:
            connection = session.connection().connection.dbapi_connection
            self._write(connection, list(rows))


class _ExecuteMany:
    """The compiled statement and the DB-API driver's ``executemany`` (SQLite)."""

    def __init__(
        self,
        table: Table,
        columns: tuple[str, ...],
        dialect: Dialect,
        key: Sequence[str],
        keep: Sequence[str],
    ) -> None:
        statement = sqlite.insert(table)
        if key:
            statement = _on_conflict_update(statement, columns, key, keep)
        compiled = statement.compile(dialect=dialect, column_keys=list(columns))
        self._sql = compiled.string
        at = {name: i for i, name in enumerate(columns)}
        order = [at[name] for name in (compiled.positiontup or columns)]
        processors = [table.c[columns[i]].type.bind_processor(dialect) for i in order]
        # Most columns need no conversion (text, integers): copy the row in the statement's
        # order, then convert only those that do, skipping NULLs.
        self._convert = [(i, p) for i, p in enumerate(processors) if p is not None]
        self._order = None if order == list(range(len(columns))) else order

    def write(self, connection: Any, rows: list[Row]) -> None:
        convert, order = self._convert, self._order
        params = []
        for row in rows:
            out = list(row) if order is None else [row[i] for i in order]
            for i, process in convert:
                if (value := out[i]) is not None:
                    out[i] = process(value)
            params.append(out)
        cursor = connection.cursor()
        try:
            cursor.executemany(self._sql, params)
        finally:
            cursor.close()


class _PostgresCopy:
    """``COPY`` into the table, or into a temporary twin and upsert from it (PostgreSQL)."""

    def __init__(
        self,
        table: Table,
        columns: tuple[str, ...],
        dialect: Dialect,
        key: Sequence[str],
        keep: Sequence[str],
    ) -> None:
        names = ", ".join(f'"{c}"' for c in columns)
        self._json = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, JSON)]
        self._prepare: str | None = None
        self._merge: str | None = None
        target = table.name
        if key:
            twin = Table(
                f"fq_bulk_{table.name}",
                MetaData(),
                *(Column(c, table.c[c].type) for c in columns),
                prefixes=["TEMPORARY"],
            )
            target = twin.name
            self._prepare = (
                f'CREATE TEMPORARY TABLE IF NOT EXISTS "{twin.name}" '
                f'(LIKE "{table.name}") ON COMMIT DELETE ROWS'
            )
            statement = postgresql.insert(table).from_select(list(columns), select(twin))
            merge = _on_conflict_update(statement, columns, key, keep)
            self._merge = str(merge.compile(dialect=dialect))
        self._copy = f'COPY "{target}" ({names}) FROM STDIN'

    def write(self, connection: Any, rows: list[Row]) -> None:
        json_at = self._json
        with connection.cursor() as cursor:
            if self._prepare is not None:
                cursor.execute(self._prepare)
            with cursor.copy(self._copy) as copy:
                for row in rows:
                    if json_at:
                        row = list(row)
                        for i in json_at:
                            if row[i] is not None:
                                row[i] = pydantic_core.to_json(row[i]).decode()
                    copy.write_row(row)
            if self._merge is not None:
                cursor.execute(self._merge)


def _on_conflict_update(
    statement: Any, columns: Sequence[str], key: Sequence[str], keep: Sequence[str]
) -> Any:
    """``statement`` (a SQLite or PostgreSQL insert) updating, on a conflict on ``key``,
    every column of ``columns`` but the key and ``keep``."""
    fixed = {*key, *keep}
    return statement.on_conflict_do_update(
        index_elements=list(key),
        set_={c: statement.excluded[c] for c in columns if c not in fixed},
    )
