"""``fq cron``: define, list, pause, resume and delete periodic schedules.

Talks to NATS directly (``FQ_NATS_URL``) through :class:`~ferrisqueue.log.cronbook.CronBook`, so
it works without a gateway; the scheduler turns the ticks into jobs.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError

from ferrisqueue.cli.common import cli_actor, load_settings, run_async
from ferrisqueue.domain.cron import CronDefinition, CronSpec
from ferrisqueue.domain.jobbuilder import JobRefused, check_job
from ferrisqueue.jobtypes import load_job_types
from ferrisqueue.log.cronbook import CronBook
from ferrisqueue.log.natsconn import close_quietly, connect_as
from ferrisqueue.log.natslog import NatsLog

app = typer.Typer(
    help="Periodic jobs: cron (seconds first) or @every schedules that the scheduler fires.",
    no_args_is_help=True,
)

T = TypeVar("T")
Name = Annotated[str, typer.Argument(help="The schedule's name")]


@app.command("add")
def add(
    name: Name,
    schedule: Annotated[
        str,
        typer.Argument(
            help="'*/30 * * * * *' (6 fields, seconds first), '0 9 * * mon-fri' (5 fields), "
            "@hourly/@daily/@weekly/@monthly/@yearly, or '@every 5m'"
        ),
    ],
    type: Annotated[str, typer.Option("--type", "-t", help="Job type, e.g. echo")],
    payload: Annotated[str, typer.Option("--payload", "-p", help="JSON object")] = "{}",
    queue: Annotated[str, typer.Option("--queue", "-q")] = "default",
    timezone: Annotated[
        str | None, typer.Option("--timezone", "--tz", help="IANA zone of a cron schedule")
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option("--max-attempts", help="Attempts before dead-lettering")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds one attempt may run")
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Define it without firing")] = False,
) -> None:
    """Create a schedule, or replace the one of that name. The job's payload must match its
    type's contract (exit 2 with the reason)."""
    try:
        spec = CronSpec(
            name=name,
            schedule=schedule,
            timezone=timezone,
            paused=paused,
            job={
                "type": type,
                "queue": queue,
                "payload": json.loads(payload),
                "max_attempts": max_attempts,
                "timeout": timeout,
            },
        )
        # Checked here, before NATS is touched, as the API and the cron file check it: a
        # payload that breaks its type's contract would make every tick a job that fails.
        check_job(spec.job, load_job_types())
    except ValueError as exc:  # a ValidationError, or --payload that is not JSON
        raise typer.BadParameter(_plain(exc)) from exc
    except JobRefused as exc:
        raise typer.BadParameter(f"the job is refused: {exc}") from exc
    stored, fires = _with_book(lambda book: _put(book, spec))
    typer.echo(_line(stored, fires))


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
    count: Annotated[int, typer.Option("--next", min=1, max=100, help="Fire times shown")] = 1,
) -> None:
    """Every schedule with its next fire time(s)."""

    async def read(book: CronBook) -> list[tuple[CronDefinition, list[datetime]]]:
        return [(d, await book.next_fires(d, count=count)) for d in await book.definitions()]

    for definition, fires in _with_book(read):
        if as_json:
            data = definition.model_dump(mode="json")
            typer.echo(json.dumps({**data, "next_fires": [f.isoformat() for f in fires]}))
        else:
            typer.echo(_line(definition, fires))


@app.command("pause")
def pause(name: Name) -> None:
    """Stop firing a schedule (its definition stays)."""
    typer.echo(_line(_with_book(lambda book: book.pause(name, actor=cli_actor())), []))


@app.command("resume")
def resume(name: Name) -> None:
    """Fire a paused schedule again."""

    async def run(book: CronBook) -> tuple[CronDefinition, list[datetime]]:
        definition = await book.resume(name, actor=cli_actor())
        return definition, await book.next_fires(definition)

    typer.echo(_line(*_with_book(run)))


@app.command("delete")
def delete(name: Name) -> None:
    """Delete a schedule (jobs it created stay)."""
    _with_book(lambda book: book.delete(name, actor=cli_actor()))
    typer.echo(f"deleted {name}")


async def _put(book: CronBook, spec: CronSpec) -> tuple[CronDefinition, list[datetime]]:
    stored = await book.put(spec, source="cli", actor=cli_actor())
    return stored, await book.next_fires(stored)


def _line(definition: CronDefinition, fires: list[datetime]) -> str:
    state = "paused" if definition.paused else "active"
    zone = definition.timezone or "UTC"
    job = f"{definition.job.queue}/{definition.job.type}"
    when = ", ".join(f.isoformat() for f in fires) or "-"
    return f"{definition.name:<24} {definition.schedule:<22} {zone:<16} {job:<24} {state:<7} {when}"


def _plain(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return str(exc)


def _with_book(action: Callable[[CronBook], Awaitable[T]]) -> T:
    """Run ``action`` on a CronBook of ``FQ_NATS_URL``; errors exit 1 with their message."""
    settings = load_settings()

    async def run() -> T:
        nc = await connect_as(settings, name="fq-cron")
        try:
            return await action(CronBook.for_settings(NatsLog.for_settings(nc, settings), settings))
        finally:
            await close_quietly(nc)

    return run_async(run())  # UnknownSchedule, NatsUnavailable, InvalidSchedule: exit 1
