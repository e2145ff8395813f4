"""``fq log backup|restore``: copies of the streams that keep every sequence number.

One directory per stream, in the layout of ``nats stream backup`` (see
:mod:`ferrisqueue.log.snapshots`), so either tool restores what the other wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ferrisqueue.cli.common import load_settings, run_async
from ferrisqueue.log.natsconn import connect_as
from ferrisqueue.log.snapshots import META_FILE, StreamCopy, backup_stream, restore_stream
from ferrisqueue.log.topology import load_stream_definitions

app = typer.Typer(
    help="The event log's streams: backups and restores that keep every sequence.",
    no_args_is_help=True,
)

Streams = Annotated[
    list[str] | None,
    typer.Option("--stream", "-s", help="Only this stream (repeatable); default: all of them"),
]


@app.command()
def backup(
    directory: Annotated[Path, typer.Argument(help="Written to: one folder per stream")],
    stream: Streams = None,
    no_consumers: Annotated[
        bool, typer.Option("--no-consumers", help="Leave the durable consumers out")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Have the server verify every message first")
    ] = False,
) -> None:
    """Snapshot every FerrisQueue stream (FQ_EVENTS, schedules, dead letters, KV buckets)."""
    names = stream or [d["name"] for d in load_stream_definitions()]
    settings = load_settings()

    async def run() -> list[StreamCopy]:
        nc = await connect_as(settings, name="fq-backup")
        try:
            return [
                await backup_stream(
                    nc, name, directory / name, consumers=not no_consumers, check=check
                )
                for name in names
            ]
        finally:
            await nc.close()

    for copy in run_async(run()):
        typer.echo(f"{_line(copy)}, {copy.size:,} bytes -> {directory / copy.stream}")


@app.command()
def restore(
    directory: Annotated[Path, typer.Argument(help="A folder `fq log backup` wrote")],
    stream: Streams = None,
    replicas: Annotated[
        int | None, typer.Option(min=1, help="Replica count (default: the backed-up one)")
    ] = None,
) -> None:
    """Recreate the streams of a backup, at their sequences, on a server that lacks them."""
    folders = _restore_order(
        [directory / name for name in stream]
        if stream
        else [p.parent for p in sorted(directory.glob(f"*/{META_FILE}"))]
    )
    if not folders:
        typer.secho(f"no stream backups under {directory}", fg="red", err=True)
        raise typer.Exit(1)
    settings = load_settings()

    async def run() -> list[StreamCopy]:
        nc = await connect_as(settings, name="fq-restore")
        try:
            return [await restore_stream(nc, folder, replicas=replicas) for folder in folders]
        finally:
            await nc.close()

    for copy in run_async(run()):
        typer.echo(f"{_line(copy)} restored")


def _restore_order(folders: list[Path]) -> list[Path]:
    """Streams that source from others last (FQ_EVENTS sources FQ_SCHEDULES), so a
    restored stream finds its sources in place."""

    def sources(folder: Path) -> bool:
        try:
            return bool(json.loads((folder / META_FILE).read_text())["config"].get("sources"))
        except (OSError, ValueError, KeyError):
            return False  # restore_stream says what is wrong with it

    return sorted(folders, key=sources)


def _line(copy: StreamCopy) -> str:
    held = (
        f"{copy.messages:,} messages, sequences {copy.first_seq:,}-{copy.last_seq:,}"
        if copy.messages
        else f"empty (last sequence {copy.last_seq:,})"
    )
    return f"{copy.stream}: {held}, {copy.consumers} consumer(s)"
