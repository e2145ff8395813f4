"""Schedules from a file (``FQ_CRON_FILE``): the scheduler applies it at start.

The file is TOML with one ``[[schedule]]`` table per schedule, the same fields as
``POST /schedules``::

    [[schedule]]
    name = "nightly-report"
    schedule = "0 30 2 * * *"
    timezone = "Europe/Berlin"

    [schedule.job]
    type = "report"
    payload = { output = "reports/nightly.html" }

Every schedule's job is checked against its type's contract when the file is read
(:func:`ferrisqueue.domain.jobbuilder.check_job`): a file with a job that could never run stops the
scheduler at start, saying which schedule and why, rather than creating jobs that fail.

Applying it is an upsert of every table (unchanged ones are not rewritten, so their
intervals are not restarted), then the deletion of schedules the file defined before
(``source = "file"``) that it no longer holds. Schedules defined through the API or the CLI
are never touched. The file owns its schedules: a file schedule paused through the API runs
again when the file is applied next, unless the file says ``paused = true``.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ferrisqueue.domain.cron import CronSpec
from ferrisqueue.domain.events import SCHEDULER_ACTOR
from ferrisqueue.domain.jobbuilder import JobRefused, check_job
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.jobtypes import JobType
from ferrisqueue.log.cronbook import CronBook

log = logging.getLogger(__name__)


class CronFile(BaseModel):
    """The file's contents."""

    model_config = ConfigDict(extra="forbid")

    schedule: list[CronSpec] = []

    @model_validator(mode="after")
    def _unique_names(self) -> CronFile:
        names = [spec.name for spec in self.schedule]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"schedule names must be unique; defined twice: {twice}")
        return self


def parse_cron_file(
    text: str, job_types: Mapping[str, JobType], *, origin: str = "<cron file>"
) -> list[CronSpec]:
    """The schedules a cron file defines, each job checked against ``job_types``;
    :class:`ConfigurationError` saying what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{origin} is not valid TOML: {exc}") from exc
    try:
        specs = CronFile.model_validate(data).schedule
    except ValidationError as exc:
        raise ConfigurationError(f"{origin} is not a valid cron file:\n{exc}") from exc
    for spec in specs:
        try:
            check_job(spec.job, job_types)
        except JobRefused as exc:
            raise ConfigurationError(
                f"{origin}: the job of schedule {spec.name} is refused: {exc}"
            ) from exc
    return specs


def load_cron_file(path: Path, job_types: Mapping[str, JobType]) -> list[CronSpec]:
    """:func:`parse_cron_file` of the file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the cron file {path}: {exc}") from exc
    return parse_cron_file(text, job_types, origin=str(path))


@dataclass
class Applied:
    """What applying a file changed."""

    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


async def apply_cron_file(book: CronBook, specs: list[CronSpec]) -> Applied:
    """Upsert ``specs`` as file schedules, then delete file schedules not among them."""
    applied = Applied()
    before = {d.name: d for d in await book.definitions()}
    for spec in specs:
        stored = await book.put(spec, source="file", actor=SCHEDULER_ACTOR)
        previous = before.get(spec.name)
        if previous is None or not previous.same_as(stored):
            applied.written.append(spec.name)
    wanted = {spec.name for spec in specs}
    for name, definition in before.items():
        if definition.source == "file" and name not in wanted:
            await book.delete(name, actor=SCHEDULER_ACTOR)
            applied.deleted.append(name)
    log.info(
        "cron file applied: %d schedules, written %s, deleted %s",
        len(specs),
        applied.written or "none",
        applied.deleted or "none",
    )
    return applied
