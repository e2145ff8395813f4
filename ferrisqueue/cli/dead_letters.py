"""``fq dead-letters``: list, show, redrive and purge dead letters through the gateway.

Every action is recorded in the job's log as an event naming who did it: the gateway's
authenticated caller (the key ``fq`` sends), never a name given here. Redrive and purge
take job ids, or a filter (the same options as ``list``); purging by filter asks for
``--yes``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from ferrisqueue.cli.common import gateway_call, load_settings

app = typer.Typer(
    help="Dead letters: list, inspect, redrive (run again) or purge (give up for good).",
    no_args_is_help=True,
)

Queue = Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue")]
JobType = Annotated[str | None, typer.Option("--type", "-t", help="Only this job type")]
Reason = Annotated[
    str | None,
    typer.Option(help="Case-insensitive text in the dead-letter reason or the last error"),
]
_TIME_HELP = "RFC 3339 time (2026-01-01T12:00:00Z) or an age like 30m, 2h, 7d"
Since = Annotated[str | None, typer.Option(help=f"Dead-lettered at or after: {_TIME_HELP}")]
Until = Annotated[str | None, typer.Option(help=f"Dead-lettered before: {_TIME_HELP}")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the gateway's JSON answer")]
Note = Annotated[str | None, typer.Option(help="Why, recorded in the event as its reason")]
JobIds = Annotated[list[str] | None, typer.Argument(help="Job ids (or select with a filter)")]
AllOfThem = Annotated[
    bool, typer.Option("--all", help="Select every dead letter (up to 1000 per call)")
]

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str | None, now: datetime | None = None) -> str | None:
    """An option's time as the gateway takes it: an age (``2h``) becomes that long before
    ``now``; anything else is passed on for the gateway to judge."""
    if text is None:
        return None
    age = _AGE.match(text.strip())
    if age is None:
        return text
    delta = timedelta(**{_UNITS[age.group(2)]: float(age.group(1))})
    return ((now or datetime.now(UTC)) - delta).isoformat()


def selection(
    queue: str | None,
    type: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
    now: datetime | None = None,
) -> dict[str, str]:
    """The filter the options describe (only the options given)."""
    given = {
        "queue": queue,
        "type": type,
        "reason": reason,
        "since": parse_time(since, now),
        "until": parse_time(until, now),
    }
    return {name: value for name, value in given.items() if value is not None}


@app.command("list")
def list_(
    queue: Queue = None,
    type: JobType = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    include_resolved: Annotated[
        bool, typer.Option("--resolved", help="Also those already redriven or purged")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    cursor: Annotated[str | None, typer.Option(help="The cursor a previous page printed")] = None,
    as_json: AsJson = False,
) -> None:
    """List dead letters, newest first."""
    params: dict[str, Any] = selection(queue, type, reason, since, until)
    params |= {"limit": limit, "include_resolved": include_resolved}
    if cursor:
        params["cursor"] = cursor
    page = _http("GET", "/dead-letters", params=params)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    for item in page["items"]:
        done = f"  [{item['resolution']} by {item['resolved_by']}]" if item["resolution"] else ""
        typer.echo(
            f"{item['job_id']}  {item['dead_lettered_at'][:19]}  {item['queue']:<12} "
            f"{item['type']:<14} attempts={item['attempts']}  {item['reason']}{done}"
        )
    if not page["items"]:
        typer.echo("no dead letters", err=True)
    if page["next_cursor"]:
        typer.echo(f"more: --cursor '{page['next_cursor']}'", err=True)


@app.command()
def show(job_id: str) -> None:
    """Show a dead letter: the kept message, its reason and lineage, the job's status now."""
    typer.echo(json.dumps(_http("GET", f"/dead-letters/{job_id}"), indent=2))


@app.command()
def redrive(
    job_ids: JobIds = None,
    queue: Queue = None,
    type: JobType = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    every: AllOfThem = False,
    note: Note = None,
    as_json: AsJson = False,
) -> None:
    """Run dead-lettered jobs again (named, or selected by a filter)."""
    body = action_body(job_ids, selection(queue, type, reason, since, until), every, note)
    _report(_http("POST", "/dead-letters/redrive", json=body), as_json)


@app.command()
def purge(
    job_ids: JobIds = None,
    queue: Queue = None,
    type: JobType = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    every: AllOfThem = False,
    note: Note = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm a purge by filter")] = False,
    as_json: AsJson = False,
) -> None:
    """Give up on dead-lettered jobs for good: they stay failed and leave the dead letters."""
    body = action_body(job_ids, selection(queue, type, reason, since, until), every, note)
    if "filter" in body and not yes:
        typer.secho(
            "purging by filter removes every dead letter it selects: add --yes "
            "(see them first with `fq dead-letters list` and the same options)",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    _report(_http("POST", "/dead-letters/purge", json=body), as_json)


def action_body(
    job_ids: list[str] | None,
    chosen: dict[str, str],
    every: bool,
    note: str | None,
) -> dict[str, Any]:
    """The body of a redrive or purge: the job ids, or the filter (``every``: an empty one
    selects every dead letter), and why. Who acts is not in it: the gateway records the
    caller it authenticated."""
    if job_ids and (chosen or every):
        raise typer.BadParameter("give job ids or a filter, not both")
    if not job_ids and not chosen and not every:
        raise typer.BadParameter(
            "name job ids, or select with --queue/--type/--reason/--since/--until (or --all)"
        )
    body: dict[str, Any] = {"job_ids": job_ids} if job_ids else {"filter": chosen}
    if note:
        body["reason"] = note
    return body


def _http(method: str, path: str, **kwargs: Any) -> Any:
    # A batch of 1,000 jobs takes a few seconds: wait longer than for a single read.
    return gateway_call(method, load_settings(), path, timeout=120, **kwargs)


def _report(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    for result in answer["results"]:
        why = f"  ({result['why']})" if result["why"] else ""
        typer.echo(f"{result['outcome']:<9} {result['job_id']}{why}")
    typer.echo(
        f"{answer['action']} by {answer['by']}: {answer['done']} done, {answer['skipped']} skipped",
        err=True,
    )
    if answer["more"]:
        typer.echo(f"more than {answer['limit']} matched: run it again for the rest", err=True)
