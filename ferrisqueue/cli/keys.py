"""``fq keys``: create, list and revoke the gateway's API keys; ``generate`` prints a new key
without storing it, for a deployment's secrets (``fq init`` imports it, see
:mod:`ferrisqueue.cli.bootstrap`).

Talks to NATS directly (``FQ_NATS_URL``, with the admin/init credentials: it writes the key
store ``FQ_KEYS``) through :class:`~ferrisqueue.log.keybook.KeyBook`; every gateway replica
sees a change as soon as it is stored. The key itself is printed once, by ``create``, and
stored nowhere: only its SHA-256 is kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from ferrisqueue.cli.common import load_settings
from ferrisqueue.domain.apikeys import KeyRecord, new_key
from ferrisqueue.domain.principal import Scope, parse_scopes
from ferrisqueue.errors import FerrisQueueError
from ferrisqueue.log.keybook import KeyBook
from ferrisqueue.log.natsconn import close_quietly, connect_as
from ferrisqueue.log.natslog import NatsLog

app = typer.Typer(
    help="The gateway's API keys: create, list, revoke; generate one for a deployment.",
    no_args_is_help=True,
)

T = TypeVar("T")
_SCOPES = ", ".join(s.value for s in Scope)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The key's name; events record it as key:NAME")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", "-s", help=f"A scope it holds (repeat; '*' for all): {_SCOPES}"),
    ],
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            help="Jobs per second it may submit, over all gateways (default: no limit)",
            min=0.001,
        ),
    ] = None,
    burst: Annotated[
        int | None,
        typer.Option("--burst", help="Jobs it may submit at once (default: one second's)", min=1),
    ] = None,
) -> None:
    """Create a key and print it, once, on stdout (the details go to stderr)."""
    try:
        scopes = parse_scopes(scope)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scope") from exc
    record, key = _with_book(lambda book: book.create(name, scopes, rate=rate, burst=burst))
    typer.echo(f"created {_line(record)}", err=True)
    typer.echo("the key is shown only now; store it safely:", err=True)
    typer.echo(key)


@app.command("generate")
def generate() -> None:
    """Print a fresh key without storing it (no NATS needed): for a deployment's secrets,
    which `fq init` imports (FQ_BOOTSTRAP_ADMIN_KEY, FQ_BOOTSTRAP_DASHBOARD_KEY)."""
    _, key = new_key()
    typer.echo(key)


@app.command("list")
def list_() -> None:
    """Every key with its id, scopes, limit and state; never the key itself."""
    records = _with_book(lambda book: book.records())
    if not records:
        typer.echo("no keys (create one with `fq keys create`)")
    for record in records:
        typer.echo(_line(record))


@app.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(help="The key's name or id")],
) -> None:
    """Revoke a key: every gateway refuses it (401) from the moment this returns."""
    record = _with_book(lambda book: book.revoke(key))
    typer.echo(f"revoked {_line(record)}")


def _line(record: KeyRecord) -> str:
    limit = f"{record.rate:g}/s burst {record.capacity}" if record.rate else "no limit"
    state = f"revoked {record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked_at else "active"
    scopes = ",".join(s.value for s in record.scopes)
    return f"{record.id}  {record.name:<20} {scopes:<40} {limit:<22} {state}"


def _with_book(action: Callable[[KeyBook], Awaitable[T]]) -> T:
    """Run ``action`` on the key store of ``FQ_NATS_URL``; errors exit 1 with their message."""
    settings = load_settings()

    async def run() -> T:
        nc = await connect_as(settings, name="fq-keys")
        try:
            return await action(KeyBook(NatsLog.for_settings(nc, settings)))
        finally:
            await close_quietly(nc)

    try:
        return asyncio.run(run())
    except FerrisQueueError as exc:  # KeyNotFound, KeyNameTaken, NatsUnavailable, ...
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from exc
