"""``fq queue``: list queues with their state, pause and resume one, print its audit.

Goes through the gateway (``FQ_GATEWAY_URL``, with ``FQ_API_KEY`` or ``var/admin.key``), so
the events name the key's holder as the actor; pausing needs the ``queues:admin`` scope.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ferrisqueue.cli.common import gateway_call, load_settings

app = typer.Typer(
    help="Queues: state, pause and resume (workers start none of a paused queue's jobs).",
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


@app.command("list")
def list_queues() -> None:
    """Every queue: active or paused (by whom, since when) and its jobs per status."""
    for row in gateway_call("GET", load_settings(), "/queues"):
        since = f" by {row['changed_by']} since {row['changed_at']}" if row["changed_by"] else ""
        counts = " ".join(f"{k}={v}" for k, v in row["counts"].items() if v)
        typer.echo(f"{row['queue']:<20} {row['state']:<7}{since}  {counts}".rstrip())


@app.command("audit")
def audit(queue: Queue) -> None:
    """Every pause and resume of QUEUE, oldest first, with who did it."""
    for event in gateway_call("GET", load_settings(), f"/queues/{queue}/events"):
        reason = f"  ({event['reason']})" if event.get("reason") else ""
        typer.echo(
            f"{event['seq']:>6}  {event['at']}  {event['event']:<8} {event['actor']}{reason}"
        )
