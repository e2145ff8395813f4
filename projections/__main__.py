"""``python -m projections``: run the projector until SIGTERM or SIGINT.

``python -m projections rebuild`` folds the whole log into the read store once and exits;
``python -m projections replay --until 2026-01-01T12:00:00Z`` stops at that time, leaving
the store as it was then; ``python -m projections verify`` compares the store with a fresh
fold of the log and exits 1 if they differ. All take ``--database-url`` (default:
``FQ_DATABASE_URL``) and are what ``fq projections rebuild|verify`` and ``fq replay`` run.
Following applies the partition ``FQ_PROJECTOR_PARTITION`` of ``FQ_PROJECTOR_PARTITIONS``
(default: the whole); the one-shot runs always fold as one partition.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import datetime

from ferrisqueue import runloop
from ferrisqueue.errors import FerrisQueueError
from ferrisqueue.logs import setup_logging
from ferrisqueue.observability.registry import new_registry
from ferrisqueue.observability.server import metrics_port
from ferrisqueue.settings import Settings
from projections.observe import ProjectorMetrics
from projections.runner import Projector
from projections.verify import verify


async def _serve(settings: Settings) -> None:
    registry = new_registry()
    metrics = ProjectorMetrics(registry) if settings.metrics_served else None
    projector = Projector(settings, metrics=metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, projector.stop)
    async with metrics_port(registry, projector.health, settings):
        await projector.run()
    if projector.lost_lead:
        raise SystemExit(3)  # let the supervisor restart it as a standby


def _aware(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} needs a timezone, e.g. {value}Z")
    return parsed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m projections", description=__doc__)
    parser.add_argument("--database-url", help="read store to write (default FQ_DATABASE_URL)")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("rebuild", help="fold the whole log once, then exit")
    replay = commands.add_parser("replay", help="fold the log up to a time, then exit")
    replay.add_argument("--until", type=_aware, required=True, help="RFC 3339 time")
    commands.add_parser("verify", help="compare the read store with a fresh fold of the log")
    args = parser.parse_args()

    settings = Settings()
    if args.database_url:
        settings = settings.model_copy(update={"database_url": args.database_url})
    setup_logging("projector", settings.log_level, settings.log_format)
    try:
        if args.command is None:
            runloop.run(_serve(settings))
            return
        if args.command == "verify":
            comparison = runloop.run(verify(settings))
            print(comparison.report())
            raise SystemExit(1 if comparison.differences else 0)
        position = runloop.run(Projector(settings).catch_up(until=getattr(args, "until", None)))
    except FerrisQueueError as exc:
        print(f"projections {args.command or 'follow'}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    print(
        f"{args.command}: read store at {settings.effective_database_url} is at stream "
        f"sequence {position}"
    )


if __name__ == "__main__":
    main()
