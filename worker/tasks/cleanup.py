"""The ``cleanup`` task: delete old files under the storage root, or purge old finished jobs
from the read store.

Files (``target="files"``), what is guaranteed:

* **Never outside the storage root.** ``root_subdir`` goes through
  :func:`worker.storage.inside`, and the pattern may not hold ``..``.
* **Symlinks are never followed.** The tree is walked with :func:`os.fwalk` from directory
  file descriptors, ``root_subdir`` is opened one component at a time with ``O_NOFOLLOW``,
  and every file is unlinked relative to its directory's descriptor. So a symlinked
  directory is not descended into, and swapping a directory for a symlink while the job runs
  cannot redirect a deletion outside the root. A symlink that matches is not deleted either
  (the link itself is left alone too): it is listed in ``skipped``.
* **Only regular files are deleted**, never directories (empty ones stay), fifos or sockets.
* **At most ``max_files`` per run.** Candidates are collected first (which also gives
  honest progress), then deleted; ``truncated`` says there were more.
* **Idempotent.** A re-run finds fewer files; a file already gone is not an error. A file
  modified or replaced between matching and deleting is skipped.

Read store (``target="read_store"``): deletes the ``jobs`` rows of finished jobs (completed,
failed, canceled) whose ``finished_at`` is older than ``older_than_seconds``, with their
``job_events`` timeline rows, oldest first, in transactions of :data:`PURGE_CHUNK` jobs. The
read store is a *projection* of the event log: rebuilding it from the log
(``fq projections rebuild``) brings purged rows back. What bounds the log itself is the
event stream's own retention: ``FQ_EVENTS`` keeps everything by default (``max_age`` 0 in
``ferrisqueue/log/jetstream/streams/FQ_EVENTS.json``); set a ``max_age`` there to bound it.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import PurePosixPath

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from ferrisqueue.domain.states import JobStatus
from ferrisqueue.errors import Permanent
from ferrisqueue.jobtypes.cleanup import (
    MAX_SKIPPED_LISTED,
    CleanupPayload,
    CleanupResult,
    SkippedPath,
)
from ferrisqueue.settings import Settings
from ferrisqueue.store.db import init_schema, make_engine
from ferrisqueue.store.models import JobEventRow, JobRow
from worker.context import JobContext
from worker.registry import TaskRegistry
from worker.storage import inside

PROGRESS_EVERY = 500
"""Files deleted between two progress reports."""

PURGE_CHUNK = 500
"""Jobs purged per read-store transaction: short transactions keep the projector going."""

FINISHED = (JobStatus.COMPLETED.value, JobStatus.FAILED.value, JobStatus.CANCELED.value)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class NotADirectory(Permanent):
    """``root_subdir`` is a file, or passes through a symlink (which cleanup never follows)."""


# --- Matching ------------------------------------------------------------------------------


def pattern_parts(pattern: str) -> tuple[str, ...]:
    """The pattern's segments, consecutive ``**`` collapsed (``.`` and empty ones dropped)."""
    parts: list[str] = []
    for part in PurePosixPath(pattern).parts:
        if part == "**" and parts and parts[-1] == "**":
            continue
        parts.append(part)
    return tuple(parts)


def matches(path: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether a relative path matches: segment by segment, ``**`` spans any number of
    segments (a trailing ``**`` everything below). ``*`` also matches dot files."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return not rest or any(matches(path[i:], rest) for i in range(len(path) + 1))
    return bool(path) and fnmatchcase(path[0], head) and matches(path[1:], rest)


def may_hold_matches(folder: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether something below ``folder`` could match: the walk skips folders that cannot."""
    if not pattern:
        return False
    if pattern[0] == "**":
        return True
    if not folder:
        return True
    return fnmatchcase(folder[0], pattern[0]) and may_hold_matches(folder[1:], pattern[1:])


# --- Files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    folder: tuple[str, ...]  # relative to the cleaned folder
    name: str
    device: int
    inode: int
    size: int


@dataclass
class _Skips:
    prefix: tuple[str, ...]  # the cleaned folder, relative to the storage root
    listed: list[SkippedPath] = field(default_factory=list)
    total: int = 0

    def add(self, parts: tuple[str, ...], reason: str) -> None:
        self.total += 1
        if len(self.listed) < MAX_SKIPPED_LISTED:
            path = "/".join((*self.prefix, *parts)) or "."
            self.listed.append(SkippedPath(path=path, reason=reason))


def _open_below(dir_fd: int, parts: tuple[str, ...]) -> int:
    """A descriptor of the folder ``parts`` below ``dir_fd``, refusing symlinks on the way."""
    fd = os.dup(dir_fd)
    try:
        for part in parts:
            below = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = below
    except BaseException:
        os.close(fd)
        raise
    return fd


def _candidates(
    base_fd: int, pattern: tuple[str, ...], cutoff: float, limit: int, skips: _Skips
) -> tuple[list[_Candidate], bool]:
    """Regular files matching ``pattern`` with an mtime at or before ``cutoff``, in a stable
    order, at most ``limit``; and whether there were more."""

    def walk_error(error: OSError) -> None:
        skips.add(tuple(PurePosixPath(str(error.filename or "?")).parts), f"unreadable: {error}")

    walk = os.fwalk(".", dir_fd=base_fd, follow_symlinks=False, onerror=walk_error)
    try:
        return _scan(walk, pattern, cutoff, limit, skips)
    finally:
        if isinstance(walk, Generator):
            walk.close()  # stopped early: fwalk closes the descriptors it holds now


def _scan(
    walk: Iterator[tuple[str, list[str], list[str], int]],
    pattern: tuple[str, ...],
    cutoff: float,
    limit: int,
    skips: _Skips,
) -> tuple[list[_Candidate], bool]:
    found: list[_Candidate] = []
    for dirpath, dirnames, filenames, dir_fd in walk:
        folder = PurePosixPath(dirpath).parts  # "./a/b" -> ("a", "b"); "." -> ()
        dirnames.sort()
        keep = []
        for name in dirnames:
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(info.st_mode):
                if matches((*folder, name), pattern) or may_hold_matches((*folder, name), pattern):
                    skips.add((*folder, name), "symlink to a folder: not followed")
            elif may_hold_matches((*folder, name), pattern):
                keep.append(name)
        dirnames[:] = keep  # fwalk descends only into these
        for name in sorted(filenames):
            parts = (*folder, name)
            if not matches(parts, pattern):
                continue
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted meanwhile: nothing to do
            if stat.S_ISLNK(info.st_mode):
                skips.add(parts, "symlink: not followed, not deleted")
            elif not stat.S_ISREG(info.st_mode):
                skips.add(parts, "not a regular file")
            elif info.st_mtime <= cutoff:
                if len(found) == limit:
                    return found, True
                found.append(_Candidate(folder, name, info.st_dev, info.st_ino, info.st_size))
    return found, False


def _delete(
    ctx: JobContext, base_fd: int, candidates: list[_Candidate], cutoff: float, skips: _Skips
) -> tuple[int, int]:
    """Unlink the candidates that are still what was matched; (count, bytes) deleted."""
    deleted = freed = 0
    open_folder: tuple[str, ...] | None = None
    folder_fd = -1
    try:
        for n, item in enumerate(candidates):
            if n and n % PROGRESS_EVERY == 0:
                total = len(candidates)
                ctx.progress_from_thread(n / total, f"deleted {deleted} of {total} files")
            parts = (*item.folder, item.name)
            if item.folder != open_folder:
                if folder_fd >= 0:
                    os.close(folder_fd)
                    folder_fd = -1
                open_folder = item.folder
                try:
                    folder_fd = _open_below(base_fd, item.folder)
                except OSError as exc:  # gone, or replaced by a symlink since the walk
                    skips.add(parts, f"folder changed since it was matched: {exc.strerror}")
                    continue
            elif folder_fd < 0:
                skips.add(parts, "folder changed since it was matched")
                continue
            try:
                info = os.stat(item.name, dir_fd=folder_fd, follow_symlinks=False)
                if (info.st_dev, info.st_ino) != (item.device, item.inode) or (
                    info.st_mtime > cutoff
                ):
                    skips.add(parts, "changed since it was matched")
                    continue
                os.unlink(item.name, dir_fd=folder_fd)
            except FileNotFoundError:
                continue  # someone (a previous run of this job?) deleted it already
            except OSError as exc:
                skips.add(parts, f"not deleted: {exc.strerror}")
                continue
            deleted += 1
            freed += info.st_size
    finally:
        if folder_fd >= 0:
            os.close(folder_fd)
    return deleted, freed


def clean_files(ctx: JobContext, payload: CleanupPayload, settings: Settings) -> CleanupResult:
    """Delete (or, in a dry run, count) the old files ``payload`` names."""
    root = settings.effective_storage_root.resolve()
    subdir = PurePosixPath(payload.root_subdir).parts
    if subdir:
        inside(root, payload.root_subdir)  # refuses absolute paths, '..' and escaping links
    pattern = pattern_parts(payload.pattern)
    if not pattern:
        raise Permanent(f"pattern {payload.pattern!r} names no file")
    cutoff = time.time() - payload.older_than_seconds
    skips = _Skips(prefix=subdir)
    empty = CleanupResult(target="files", dry_run=payload.dry_run, matched=0, deleted=0)
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return empty  # no storage yet: nothing is old enough
    try:
        try:
            base_fd = _open_below(root_fd, subdir)
        except FileNotFoundError:
            return empty
        except OSError as exc:  # a file, a symlink (ENOTDIR/ELOOP), no permission
            raise NotADirectory(
                f"root_subdir {payload.root_subdir!r} is not a folder (symlinks are not "
                f"followed): {exc.strerror}"
            ) from exc
    finally:
        os.close(root_fd)
    try:
        found, truncated = _candidates(base_fd, pattern, cutoff, payload.max_files, skips)
        deleted = freed = 0
        if not payload.dry_run:
            deleted, freed = _delete(ctx, base_fd, found, cutoff, skips)
    finally:
        os.close(base_fd)
    return CleanupResult(
        target="files",
        dry_run=payload.dry_run,
        matched=len(found),
        matched_bytes=sum(c.size for c in found),
        deleted=deleted,
        bytes_freed=freed,
        truncated=truncated,
        skipped=skips.listed,
        skipped_total=skips.total,
    )


# --- Read store ----------------------------------------------------------------------------


def purge_read_store(ctx: JobContext, payload: CleanupPayload, settings: Settings) -> CleanupResult:
    """Delete (or count) finished jobs older than the cutoff and their timelines."""
    cutoff = datetime.now(UTC) - timedelta(seconds=payload.older_than_seconds)
    old_and_finished = (
        col(JobRow.status).in_(FINISHED),
        col(JobRow.finished_at).is_not(None),
        col(JobRow.finished_at) < cutoff,
    )
    engine = make_engine(settings.effective_database_url)
    try:
        init_schema(engine)  # checks the schema version before deleting anything
        with Session(engine) as session:
            ids = list(
                session.exec(
                    select(JobRow.job_id)
                    .where(*old_and_finished)
                    .order_by(col(JobRow.finished_at), col(JobRow.job_id))
                    .limit(payload.max_files + 1)
                )
            )
            truncated = len(ids) > payload.max_files
            ids = ids[: payload.max_files]
            events = 0
            for chunk in _chunks(ids):
                events += session.exec(
                    select(func.count())
                    .select_from(JobEventRow)
                    .where(col(JobEventRow.job_id).in_(chunk))
                ).one()
        result = CleanupResult(
            target="read_store",
            dry_run=payload.dry_run,
            matched=len(ids),
            deleted=0,
            events_matched=events,
            truncated=truncated,
        )
        if payload.dry_run:
            return result
        for done, chunk in enumerate(_chunks(ids), 1):
            with Session(engine) as session:
                # The conditions again, in the deleting statement: a job redriven since the
                # select is pending now and must stay.
                gone = list(
                    session.exec(
                        delete(JobRow)
                        .where(col(JobRow.job_id).in_(chunk), *old_and_finished)
                        .returning(col(JobRow.job_id))
                    ).scalars()
                )
                if gone:
                    purged = session.exec(
                        delete(JobEventRow).where(col(JobEventRow.job_id).in_(gone))
                    )
                    result.events_deleted += purged.rowcount
                session.commit()
            result.deleted += len(gone)
            if done * PURGE_CHUNK < len(ids):
                ctx.progress_from_thread(done * PURGE_CHUNK / len(ids), f"purged {result.deleted}")
        return result
    finally:
        engine.dispose()


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), PURGE_CHUNK):
        yield ids[start : start + PURGE_CHUNK]


def cleanup(ctx: JobContext, payload: CleanupPayload, settings: Settings) -> CleanupResult:
    """Run one ``cleanup`` job (blocking: runs in a worker thread)."""
    if payload.target == "read_store":
        return purge_read_store(ctx, payload, settings)
    return clean_files(ctx, payload, settings)


def register(registry: TaskRegistry, settings: Settings) -> None:
    """Register the handler of ``cleanup`` jobs."""

    def handler(ctx: JobContext, payload: CleanupPayload) -> CleanupResult:
        return cleanup(ctx, payload, settings)

    registry.task("cleanup")(handler)
