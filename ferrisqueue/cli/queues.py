"""``fq queue``: list queues with their state, pause and resume one, set its limits, print
its audit.

Goes through the gateway (``FQ_GATEWAY_URL``, with ``FQ_API_KEY`` or ``var/admin.key``), so
the events name the key's holder as the actor; pausing needs the ``queues:admin`` scope.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ferrisqueue.cli.common import gateway_call, load_settings

app = typer.Typer(
    help="Queues: state, pause and resume (workers start none of a paused queue's jobs), "
    "concurrency and rate limits.",
    no_args_is_help=True,
)

Queue = Annotated[str, typer.Argument(help="The queue's name")]
Reason = Annotated[str | None, typer.Option("--reason", help="Why (kept in the event)")]


def _control(queue: str, action: str, reason: str | None) -> None:
    body: dict[str, Any] = {"reason": reason} if reason else {}
    answer = gateway_call("POST", load_settings(), f"/queues/{queue}/{action}", json=body)
    typer.echo(json.dumps(answer, indent=2))


@app.command("pause")
def pause(queue: Queue, reason: Reason = None) -> None:
    """Pause QUEUE: submits are accepted, no job of it starts until it is resumed (running
    ones finish)."""
    _control(queue, "pause", reason)


@app.command("resume")
def resume(queue: Queue, reason: Reason = None) -> None:
    """Resume QUEUE: its workers start its jobs again, where they stopped."""
    _control(queue, "resume", reason)


def _rate(text: str | None, option: str) -> dict[str, Any] | None:
    """``N/SECONDS`` (``10/1``, ``100/60``) or ``N`` (per second) as a rate limit."""
    if text is None:
        return None
    limit, _, period = text.partition("/")
    try:
        return {"limit": int(limit), "period": float(period or 1)}
    except ValueError:
        raise typer.BadParameter(f"{option} takes N/SECONDS, e.g. 10/1 or 100/60") from None


@app.command("limit")
def limit(
    queue: Queue,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Jobs of QUEUE running at once")
    ] = None,
    key_concurrency: Annotated[
        int | None,
        typer.Option("--key-concurrency", min=1, help="Jobs of one concurrency key at once"),
    ] = None,
    rate: Annotated[
        str | None, typer.Option("--rate", help="Starts of QUEUE's jobs: N/SECONDS")
    ] = None,
    key_rate: Annotated[
        str | None, typer.Option("--key-rate", help="Starts of one key's jobs: N/SECONDS")
    ] = None,
    reason: Reason = None,
) -> None:
    """Set QUEUE's limits, across all its workers; a limit not given is lifted (no option
    lifts them all)."""
    body: dict[str, Any] = {
        "concurrency": concurrency,
        "key_concurrency": key_concurrency,
        "rate": _rate(rate, "--rate"),
        "key_rate": _rate(key_rate, "--key-rate"),
    }
    if reason:
        body["reason"] = reason
    answer = gateway_call("PUT", load_settings(), f"/queues/{queue}/limits", json=body)
    typer.echo(json.dumps(answer, indent=2))


@app.command("list")
def list_queues() -> None:
    """Every queue: active or paused (by whom, since when) and its jobs per status."""
    for row in gateway_call("GET", load_settings(), "/queues"):
        since = f" by {row['changed_by']} since {row['changed_at']}" if row["changed_by"] else ""
        counts = " ".join(f"{k}={v}" for k, v in row["counts"].items() if v)
        limits = " ".join(_shown(k, v) for k, v in row["limits"].items() if v is not None)
        limited = f"  limits: {limits}" if limits else ""
        typer.echo(f"{row['queue']:<20} {row['state']:<7}{since}  {counts}{limited}".rstrip())


def _shown(name: str, value: Any) -> str:
    if isinstance(value, dict):
        return f"{name}={value['limit']}/{value['period']:g}s"
    return f"{name}={value}"


@app.command("audit")
def audit(queue: Queue) -> None:
    """Every pause, resume and setting of limits of QUEUE, oldest first, with who did it."""
    for event in gateway_call("GET", load_settings(), f"/queues/{queue}/events"):
        reason = f"  ({event['reason']})" if event.get("reason") else ""
        if (limits := event.get("limits")) is not None:
            reason = f"  {' '.join(_shown(k, v) for k, v in limits.items()) or 'none'}{reason}"
        typer.echo(
            f"{event['seq']:>6}  {event['at']}  {event['event']:<8} {event['actor']}{reason}"
        )
