"""One active projector per read store.

Two projectors folding into the same store would each receive part of the log. The lock
lives with the store itself, so it holds whatever NATS does:

* PostgreSQL: a session-level advisory lock, held by one dedicated connection; it is
  released by the server when that connection dies, so a crashed leader frees it at once.
* SQLite: an exclusive ``flock`` on ``<database>.<name>.lock``; the kernel releases it when the
  process dies. (A SQLite store is local to one machine, and so is its lock.)

A projector that does not get the lock waits as a standby and tries again. The leader checks
its lock every few seconds (:meth:`StoreLock.still_held`) and stops if the lock's
PostgreSQL connection is gone, since a standby may then have taken over.
"""

from __future__ import annotations

import fcntl
import os
import zlib
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text


class StoreLock:
    """A non-blocking, process-lifetime exclusive lock on a read store."""

    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        self._name = name
        self._held: Any = None

    @property
    def held(self) -> bool:
        return self._held is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this process now holds it."""
        if self._held is not None:
            return True
        if self._engine.dialect.name == "postgresql":
            connection = self._engine.connect()
            key = zlib.crc32(f"ferrisqueue:{self._name}".encode())
            if connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                self._held = connection
                return True
            connection.close()
            return False
        path = Path(f"{self._engine.url.database}.{self._name}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held = fd
        return True

    def still_held(self) -> bool:
        """Whether the lock is still ours: a PostgreSQL session can be cut under us."""
        if self._held is None:
            return False
        if isinstance(self._held, int):
            return True  # a flock lives as long as this process
        try:
            self._held.execute(text("SELECT 1"))
        except Exception:  # any database error: the session, and with it the lock, is gone
            return False
        return True

    def release(self) -> None:
        if self._held is None:
            return
        if isinstance(self._held, int):
            fcntl.flock(self._held, fcntl.LOCK_UN)
            os.close(self._held)
        else:
            self._held.close()  # the advisory lock goes with the session
        self._held = None
