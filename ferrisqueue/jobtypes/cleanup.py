"""Contract of the ``cleanup`` job type: delete old files under the storage root, or purge
old finished jobs from the read store. See ``worker.tasks.cleanup`` for the guarantees
(never outside the root, symlinks never followed, only regular files deleted).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ferrisqueue.jobtypes import JobType

MAX_SKIPPED_LISTED = 100
"""Skipped paths listed in a result; ``skipped_total`` counts them all."""


def _relative(value: str, what: str) -> str:
    pure = PurePosixPath(value)
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"{what} must be relative and inside the storage root (no '..')")
    return value


class CleanupPayload(BaseModel):
    """What a ``cleanup`` job deletes."""

    model_config = ConfigDict(extra="forbid")

    target: Literal["files", "read_store"] = Field(
        default="files",
        description="'files': files under the storage root; 'read_store': rows of finished "
        "jobs (and their timelines) in the read store.",
    )
    older_than_seconds: float = Field(
        ge=0,
        le=100 * 366 * 86_400,  # a century: anything larger is a mistake
        description="Only what is at least this old goes: a file's modification time, a "
        "job's finished_at. Required on purpose: there is no 'everything' default.",
    )
    root_subdir: str = Field(
        default="",
        max_length=1_000,
        description="Folder to clean, relative to the storage root; '' is the root itself "
        "(files only).",
    )
    pattern: str = Field(
        default="*",
        min_length=1,
        max_length=500,
        description="Glob relative to root_subdir, matched per path segment ('*', '?', "
        "'[...]'); a '**' segment spans any number of folders, e.g. '**/*.tmp' (files only).",
    )
    dry_run: bool = Field(
        default=False,
        description="Count what would be deleted and delete nothing. Default false: set it "
        "true to preview a pattern first.",
    )
    max_files: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Safety cap: at most this many files (or jobs) per run; the result says "
        "'truncated' when more matched, and the next run goes on.",
    )

    @field_validator("root_subdir")
    @classmethod
    def _root_subdir_inside(cls, value: str) -> str:
        return _relative(value, "root_subdir")

    @field_validator("pattern")
    @classmethod
    def _pattern_inside(cls, value: str) -> str:
        return _relative(value, "pattern")

    @model_validator(mode="after")
    def _file_fields_for_files_only(self) -> Self:
        if self.target == "read_store" and {"root_subdir", "pattern"} & self.model_fields_set:
            raise ValueError("root_subdir and pattern apply to target 'files' only")
        return self


class SkippedPath(BaseModel):
    """A path the cleanup matched but left alone, and why."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Relative to the storage root.")
    reason: str


class CleanupResult(BaseModel):
    """What a ``cleanup`` job found and deleted. In a dry run nothing is deleted: the
    ``matched`` counts say what would have been."""

    model_config = ConfigDict(extra="forbid")

    target: Literal["files", "read_store"]
    dry_run: bool
    matched: int = Field(description="Files (or finished jobs) old enough and matching.")
    deleted: int = Field(description="Files (or jobs) actually deleted.")
    matched_bytes: int = Field(default=0, description="Size of the matched files.")
    bytes_freed: int = Field(default=0, description="Size of the deleted files.")
    events_matched: int = Field(default=0, description="read_store: timeline rows matched.")
    events_deleted: int = Field(default=0, description="read_store: timeline rows deleted.")
    truncated: bool = Field(default=False, description="More matched than max_files.")
    skipped: list[SkippedPath] = Field(
        default_factory=list,
        description=f"Paths left alone and why (the first {MAX_SKIPPED_LISTED}).",
    )
    skipped_total: int = 0


JOB_TYPE = JobType(
    name="cleanup",
    description="Delete files older than a given age matching a glob under the storage root "
    "(symlinks never followed), or purge old finished jobs from the read store.",
    payload=CleanupPayload,
    result=CleanupResult,
)
