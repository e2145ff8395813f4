"""Periodic jobs: what a schedule is, and the pure parts of firing one.

A schedule is written the way the nats-server's message schedules take it (``Nats-Schedule``):

* 6-field cron, seconds first: ``*/2 * * * * *``, ``0 30 2 * * mon-fri``; a classic 5-field
  line is accepted and made 6-field by prefixing ``0 `` (at second 0);
* predefined: ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
  (``@midnight``), ``@hourly``;
* an interval: ``@every 2s``, ``@every 5m``, ``@every 1h30m`` (whole seconds, at least 1 s).

Cron schedules may name an IANA time zone; intervals may not (the server refuses one). The
expressions are checked here against the subset the server understands (no ``L``, ``W``,
``#``, no reversed ranges, day of week 0-6, a date that exists), so that a definition the
API accepts is one the server will run. Next fire times come from ``croniter``.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ferrisqueue.domain.events import Token, UtcDatetime, cron_actor
from ferrisqueue.domain.jobbuilder import JobFields
from ferrisqueue.errors import FerrisQueueError


class InvalidSchedule(FerrisQueueError, ValueError):
    """A schedule expression or time zone that cannot be run (a ``ValueError`` too, so that
    pydantic reports it as a validation error with this message)."""


class UnknownSchedule(FerrisQueueError):
    """No schedule of that name is defined."""


PREDEFINED = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
"""The predefined schedules the server knows, as 6-field cron (same meaning)."""

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_FIELDS: tuple[tuple[str, int, int, list[str]], ...] = (
    ("second", 0, 59, []),
    ("minute", 0, 59, []),
    ("hour", 0, 23, []),
    ("day of month", 1, 31, []),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)
_ITEM = re.compile(r"(?P<range>\*|\?|(?P<a>[0-9a-z]+)(?:-(?P<b>[0-9a-z]+))?)(?:/(?P<step>\d+))?")
_EVERY = re.compile(r"@every (?P<spec>(?:\d+[hms])+)")
_EVERY_PART = re.compile(r"(\d+)([hms])")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}
# The server refuses a cron whose dates never occur (e.g. 31 February); croniter finds a
# leap day within 8 years, so a longer search means "never".
_MAX_YEARS_BETWEEN_FIRES = 8


def normalise_schedule(expression: str) -> str:
    """The canonical form of ``expression`` (raises :class:`InvalidSchedule` with the reason).

    Canonical: lower case, single spaces, 6 cron fields, an interval as ``@every 1h30m``.
    Two definitions with the same canonical schedule fire at the same times.
    """
    text = " ".join(expression.strip().lower().split())
    if text.startswith("@every"):
        return f"@every {format_interval(_parse_interval(text))}"
    if text.startswith("@"):
        if text not in PREDEFINED:
            known = ", ".join(sorted(PREDEFINED))
            raise InvalidSchedule(f"unknown schedule {expression!r}: use one of {known}")
        return text
    fields = text.split(" ")
    if len(fields) == 5:
        fields = ["0", *fields]  # classic cron: at second 0
    if len(fields) != 6:
        raise InvalidSchedule(
            f"a cron schedule has 6 fields (second minute hour day-of-month month "
            f"day-of-week) or 5 (no seconds); {expression!r} has {len(text.split(' '))}"
        )
    for field, (what, low, high, names) in zip(fields, _FIELDS, strict=True):
        _check_field(field, what, low, high, names)
    cron = " ".join(fields)
    _check_fires(cron)  # dates that never occur
    return cron


def _check_field(field: str, what: str, low: int, high: int, names: list[str]) -> None:
    for item in field.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise InvalidSchedule(
                f"{what} field {field!r}: {item!r} is not a value, a range (a-b), '*' or a "
                "step (x/n); L, W and # are not supported"
            )
        if match["range"] == "?" and what not in ("day of month", "day of week"):
            raise InvalidSchedule(f"{what} field {field!r}: '?' only stands for a day")
        if match["step"] is not None and int(match["step"]) == 0:
            raise InvalidSchedule(f"{what} field {field!r}: a step must be at least 1")
        if match["a"] is None:
            continue
        a = _value(match["a"], what, low, high, names)
        if match["b"] is not None and _value(match["b"], what, low, high, names) < a:
            raise InvalidSchedule(f"{what} field {field!r}: range {item!r} runs backwards")


def _value(token: str, what: str, low: int, high: int, names: list[str]) -> int:
    if token in names:
        return names.index(token) + (1 if what == "month" else 0)
    if not token.isdigit() or not low <= int(token) <= high:
        allowed = f"{low}-{high}" + (f" or {names[0]}..{names[-1]}" if names else "")
        raise InvalidSchedule(f"{what} {token!r} is out of range ({allowed})")
    return int(token)


def _parse_interval(text: str) -> int:
    match = _EVERY.fullmatch(text)
    if match is None:
        raise InvalidSchedule(
            f"{text!r}: an interval is '@every <duration>' in whole hours, minutes and "
            "seconds, e.g. '@every 30s', '@every 5m', '@every 1h30m'"
        )
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _EVERY_PART.findall(match["spec"]))
    if seconds < 1:
        raise InvalidSchedule(f"{text!r}: an interval must be at least 1 s")
    return seconds


def format_interval(seconds: int) -> str:
    """``5400`` -> ``1h30m``: the shortest Go-style duration of whole units."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or "0s"


def interval_seconds(schedule: str) -> int | None:
    """The period of an ``@every`` schedule in seconds; ``None`` for cron schedules."""
    return _parse_interval(schedule) if schedule.startswith("@every") else None


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone (``Europe/Berlin``, ``UTC``), else
    :class:`InvalidSchedule`."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(f"unknown time zone {name!r} (use an IANA name)") from exc
    return name


def _cron_of(schedule: str) -> str:
    return PREDEFINED.get(schedule, schedule)


def _check_fires(cron: str) -> None:
    try:
        croniter(
            cron,
            datetime.now(UTC),
            second_at_beginning=True,
            max_years_between_matches=_MAX_YEARS_BETWEEN_FIRES,
        ).get_next(datetime)
    except (ValueError, KeyError) as exc:  # croniter's errors subclass ValueError
        raise InvalidSchedule(f"cron {cron!r} never fires or cannot be parsed: {exc}") from exc


def next_cron_fires(
    schedule: str, timezone: str | None, after: datetime, count: int
) -> list[datetime]:
    """The next ``count`` fire times of a cron (or predefined) schedule after ``after``, in
    UTC; evaluated in ``timezone`` (UTC when ``None``), as the server does."""
    zone = ZoneInfo(timezone) if timezone else UTC
    it = croniter(_cron_of(schedule), after.astimezone(zone), second_at_beginning=True)
    return [it.get_next(datetime).astimezone(UTC) for _ in range(count)]


def next_interval_fires(
    first: datetime, interval: int, now: datetime, count: int
) -> list[datetime]:
    """``count`` fire times of an interval schedule from the first one at or after ``now``,
    given one fire time ``first`` it is known to keep (it fires every ``interval`` s)."""
    if first < now:
        behind = (now - first).total_seconds()
        first += timedelta(seconds=interval * -(-behind // interval))
    return [first + timedelta(seconds=interval * n) for n in range(count)]


def round_to_second(moment: datetime) -> datetime:
    """The nearest whole second: the server starts an interval schedule at
    round(stored + interval) (measured on nats-server 2.15.1)."""
    return (moment + timedelta(microseconds=500_000)).replace(microsecond=0)


def tick_job_id(name: str, tick_seq: int, fired_at: datetime) -> str:
    """The id of the one job a tick creates: UUIDv7-shaped and deterministic.

    The 48-bit time is the tick's (milliseconds), so cron jobs sort by when they fired like
    any other job; the 74 "random" bits are a hash of the schedule name, the tick's stream
    sequence and that millisecond, which together name one tick message (the time keeps ids
    apart even if the stream were re-created and its sequences began again). Every scheduler
    instance, and every redelivery of the tick, computes the same id.
    """
    millis = int(fired_at.timestamp() * 1000)
    digest = hashlib.sha256(f"cron:{name}:{tick_seq}:{millis}".encode()).digest()
    bits = int.from_bytes(digest[:10], "big")
    rand_a, rand_b = (bits >> 62) & 0xFFF, bits & ((1 << 62) - 1)
    value = ((millis & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (rand_a << 64)
    value |= (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


class JobTemplate(JobFields):
    """The job each tick creates (the fields of a ``submitted`` event); its payload must
    match its type's contract."""

    # Checked when the schedule is defined (ferrisqueue.domain.jobbuilder.check_job, through
    # CronBook.put) and built on every tick by the same builder as any other job.


class CronSpec(BaseModel):
    """What a user defines: a named schedule and the job it creates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Token = Field(description="Unique name of the schedule.")
    schedule: str = Field(
        description="6-field cron with seconds first ('*/2 * * * * *'), 5-field cron, "
        "@hourly/@daily/@weekly/@monthly/@yearly, or an interval ('@every 5m').",
        max_length=200,
    )
    timezone: str | None = Field(
        default=None, description="IANA time zone of a cron schedule (default UTC)."
    )
    job: JobTemplate
    paused: bool = Field(default=False, description="Defined, but not firing.")

    @field_validator("schedule")
    @classmethod
    def _normalise(cls, value: str) -> str:
        return normalise_schedule(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)

    @model_validator(mode="after")
    def _zone_only_for_cron(self) -> CronSpec:
        if self.timezone is not None and self.schedule.startswith("@every"):
            raise InvalidSchedule("a time zone applies to cron schedules only, not to @every")
        return self

    @property
    def actor(self) -> str:
        """The actor of the jobs this schedule creates: ``cron:<name>``."""
        return cron_actor(self.name)


Source = Literal["api", "cli", "file"]


class CronDefinition(CronSpec):
    """A stored schedule (the value in the ``FQ_CRON`` bucket)."""

    source: Source = Field(
        default="api",
        description="Who defined it: api, cli or file (FQ_CRON_FILE owns the 'file' ones).",
    )
    created_at: UtcDatetime
    updated_at: UtcDatetime
    updated_by: str | None = Field(
        default=None,
        max_length=200,
        description="Who last created, replaced, paused or resumed it (the API's "
        "authenticated caller, cli:<user>@<host>, or the cron file); absent in older ones.",
    )

    def spec(self) -> CronSpec:
        """The user-defined part, without bookkeeping."""
        return CronSpec.model_validate(self.model_dump(include=set(CronSpec.model_fields)))

    def same_as(self, other: CronDefinition) -> bool:
        """Whether both define the same thing (timestamps aside)."""
        return self.spec() == other.spec() and self.source == other.source
