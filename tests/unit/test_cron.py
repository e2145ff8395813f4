"""The pure parts of periodic jobs: parsing and normalising schedules, next fire times, the
deterministic job id of a tick, and cron files."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from ferrisqueue.domain.cron import (
    CronDefinition,
    CronSpec,
    InvalidSchedule,
    interval_seconds,
    next_cron_fires,
    next_interval_fires,
    normalise_schedule,
    round_to_second,
    tick_job_id,
)
from ferrisqueue.domain.ids import is_token
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.jobtypes import builtin_job_types
from scheduler.cronfile import load_cron_file, parse_cron_file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cron.toml"
JOB_TYPES = {t.name: t for t in builtin_job_types()}


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("*/2 * * * * *", "*/2 * * * * *"),
        ("*/5 * * * *", "0 */5 * * * *"),  # 5 fields: at second 0
        ("  0  30 2 *  * MON-FRI ", "0 30 2 * * mon-fri"),
        ("0 0 9 1-15/2 jan,jul ?", "0 0 9 1-15/2 jan,jul ?"),
        ("@HOURLY", "@hourly"),
        ("@annually", "@annually"),
        ("@every 90s", "@every 1m30s"),
        ("@every 5m", "@every 5m"),
        ("@every 1h30m", "@every 1h30m"),
        ("@every 3600s", "@every 1h"),
        ("@Every  2s", "@every 2s"),
    ],
)
def test_schedules_are_normalised(written: str, canonical: str) -> None:
    assert normalise_schedule(written) == canonical


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("* * * *", "has 4"),
        ("0 0 0 * * * 2026", "has 7"),
        ("60 * * * * *", "second '60' is out of range (0-59)"),
        ("0 0 24 * * *", "hour '24' is out of range"),
        ("0 0 0 * * 7", "day of week '7' is out of range (0-6"),
        ("0 0 0 * 13 *", "month '13' is out of range"),
        ("0 0 0 * * 5#3", "L, W and # are not supported"),
        ("0 0 0 L * *", "day of month 'l' is out of range"),
        ("5-1 * * * * *", "runs backwards"),
        ("*/0 * * * * *", "a step must be at least 1"),
        ("0 ? * * * *", "'?' only stands for a day"),
        ("0 0 0 31 2 *", "never fires"),
        ("@often", "unknown schedule '@often'"),
        ("@every 0s", "at least 1 s"),
        ("@every 1.5s", "whole hours, minutes and seconds"),
        ("@every 500ms", "whole hours, minutes and seconds"),
    ],
)
def test_schedules_the_server_would_refuse_are_refused_with_the_reason(
    written: str, reason: str
) -> None:
    with pytest.raises(InvalidSchedule) as refused:
        normalise_schedule(written)
    assert reason in str(refused.value)


def test_interval_seconds_only_for_every() -> None:
    assert interval_seconds("@every 1m30s") == 90
    assert interval_seconds("*/2 * * * * *") is None
    assert interval_seconds("@hourly") is None


def _spec(**fields: object) -> CronSpec:
    return CronSpec.model_validate(
        {"name": "s", "schedule": "@hourly", "job": {"type": "echo"}} | fields
    )


def test_a_spec_carries_a_valid_timezone_for_cron_only() -> None:
    assert _spec(timezone="Europe/Berlin").timezone == "Europe/Berlin"
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        _spec(timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="cron schedules only"):
        _spec(schedule="@every 5s", timezone="UTC")


def test_a_spec_refuses_a_bad_name_or_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="name"):
        _spec(name="no.dots")
    with pytest.raises(ValidationError, match="colour"):
        _spec(colour="red")


def test_next_cron_fires_in_utc() -> None:
    after = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)

    fires = next_cron_fires("*/2 * * * * *", None, after, 3)

    assert fires == [after + timedelta(seconds=s) for s in (1, 3, 5)]


def test_next_cron_fires_in_a_time_zone() -> None:
    friday_11_berlin = datetime(2026, 1, 16, 10, 0, tzinfo=UTC)  # CET = UTC+1

    weekdays_9 = next_cron_fires("0 0 9 * * mon-fri", "Europe/Berlin", friday_11_berlin, 2)
    daily = next_cron_fires("@daily", "America/New_York", friday_11_berlin, 1)

    assert weekdays_9 == [
        datetime(2026, 1, 19, 8, 0, tzinfo=UTC),  # Monday 09:00 in Berlin
        datetime(2026, 1, 20, 8, 0, tzinfo=UTC),
    ]
    assert daily == [datetime(2026, 1, 17, 5, 0, tzinfo=UTC)]  # midnight EST = 05:00 UTC


def test_next_interval_fires_continue_from_a_known_fire() -> None:
    known = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    ahead = next_interval_fires(known, 30, known - timedelta(seconds=5), 2)
    behind = next_interval_fires(known, 30, known + timedelta(seconds=65), 2)

    assert ahead == [known, known + timedelta(seconds=30)]
    assert behind == [known + timedelta(seconds=90), known + timedelta(seconds=120)]


def test_round_to_second() -> None:
    base = datetime(2026, 1, 1, 12, 0, 6, tzinfo=UTC)

    assert round_to_second(base + timedelta(milliseconds=150)) == base
    assert round_to_second(base + timedelta(milliseconds=894)) == base + timedelta(seconds=1)


FIRED = datetime(2026, 3, 1, 12, 0, 2, 1234, tzinfo=UTC)


def test_a_ticks_job_id_is_deterministic_and_uuid7_shaped() -> None:
    job_id = tick_job_id("nightly", 42, FIRED)
    parsed = uuid.UUID(job_id)

    assert tick_job_id("nightly", 42, FIRED) == job_id  # every instance, every redelivery
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == int(FIRED.timestamp() * 1000)  # sorts by the tick's time
    assert is_token(job_id)


def test_each_tick_has_its_own_job_id() -> None:
    ids = {
        tick_job_id("nightly", 42, FIRED),
        tick_job_id("nightly", 43, FIRED),
        tick_job_id("hourly", 42, FIRED),
        tick_job_id("nightly", 42, FIRED + timedelta(milliseconds=1)),
    }
    later = tick_job_id("nightly", 44, FIRED + timedelta(seconds=2))

    assert len(ids) == 4
    assert later > max(ids)


def test_same_as_ignores_timestamps_but_not_the_source() -> None:
    fields = {"name": "s", "schedule": "@hourly", "job": {"type": "echo"}}
    a = CronDefinition.model_validate(fields | {"created_at": FIRED, "updated_at": FIRED})
    later = FIRED + timedelta(hours=1)
    b = CronDefinition.model_validate(fields | {"created_at": later, "updated_at": later})

    assert a.same_as(b)
    assert not a.same_as(b.model_copy(update={"source": "file"}))
    assert not a.same_as(b.model_copy(update={"paused": True}))


def test_the_example_cron_file_loads() -> None:
    specs = load_cron_file(EXAMPLE, JOB_TYPES)

    by_name = {spec.name: spec for spec in specs}
    assert set(by_name) == {"purge-old-jobs", "weekday-hello", "tidy-temp-files"}
    assert by_name["weekday-hello"].schedule == "0 0 8 * * mon-fri"
    assert by_name["purge-old-jobs"].timezone == "Europe/Berlin"
    assert by_name["tidy-temp-files"].paused is True
    assert by_name["tidy-temp-files"].job.timeout == 600


def test_an_empty_cron_file_defines_nothing() -> None:
    assert parse_cron_file("", JOB_TYPES) == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[[schedule]\nname = ", "not valid TOML"),
        (
            '[[schedule]]\nname = "a"\nschedule = "@often"\njob = { type = "echo" }',
            "unknown schedule '@often'",
        ),
        (
            '[[schedule]]\nname = "a"\nschedule = "@hourly"\njob = { type = "echo" }\n'
            '[[schedule]]\nname = "a"\nschedule = "@daily"\njob = { type = "echo" }',
            "defined twice: ['a']",
        ),
        ('[[schedule]]\nname = "a"\nschedule = "@hourly"', "job"),
        ('[[cron]]\nname = "a"', "cron"),
        (
            '[[schedule]]\nname = "purge"\nschedule = "@hourly"\n'
            'job = { type = "cleanup", payload = { older_than_seconds = -1 } }',
            "the job of schedule purge is refused: payload.older_than_seconds: Input should be "
            "greater than or equal to 0",
        ),
    ],
)
def test_a_bad_cron_file_is_a_configuration_error_saying_why(text: str, reason: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        parse_cron_file(text, JOB_TYPES, origin="cron.toml")
    assert "cron.toml" in str(refused.value)
    assert reason in str(refused.value)


def test_a_missing_cron_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the cron file"):
        load_cron_file(tmp_path / "absent.toml", JOB_TYPES)
