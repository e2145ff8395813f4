"""``python -m bench``: run the benchmarks, print Markdown tables, write JSON.

    python -m bench                          # everything (make bench)
    python -m bench --only processing --workers 2 --jobs 5000
    python -m bench --only durability --jobs 5000   # default fsync against sync_interval: always
    python -m bench --only projection        # the projector in process: events/s on each store
    python -m bench --only partitions        # 1 and 2 partitions of it, one process each
    python -m bench --only dashboard --jobs 100000  # page loads, SQLite and PostgreSQL
    python -m bench --profile bench/results/profiles   # py-spy on a worker, if installed
    python -m bench peers                    # the peers (make bench-peers; needs their venv)

Sizes come from options or the environment: BENCH_JOBS (20,000), BENCH_CONCURRENCY (the
worker's FQ_WORKER_CONCURRENCY, 16), BENCH_LATENCY_SECONDS (5), BENCH_RUNS (peers, 3).
BENCH_METRICS (on, off or both; ``--metrics``): processing with the services' Prometheus
metrics on, off, or each in turn to measure what they cost.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from bench.harness import REPO, env_float, env_int

SCENARIOS = ("baseline", "enqueue", "processing", "latency", "projection")
OPTIONAL = ("durability", "dashboard", "partitions")
"""Scenarios run only when named with ``--only`` (not part of ``make bench``)."""
RESULTS = REPO / "bench" / "results"

log = logging.getLogger("bench")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="FerrisQueue's own benchmarks (the default)")
    peers = sub.add_parser("peers", help="the same processing workload on other job queues")
    for each in (p, run, peers):
        each.add_argument("--jobs", type=int, default=env_int("BENCH_JOBS", 20_000))
        each.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    _run_options(run)
    _run_options(p)
    peers.add_argument("--only", type=_names, default=None, help="peer names, comma separated")
    peers.add_argument("--runs", type=int, default=env_int("BENCH_RUNS", 3))
    peers.add_argument("--workers", type=int, default=2, help="worker processes per peer")
    peers.add_argument(
        "--python",
        type=Path,
        default=REPO / "bench" / ".venv-peers" / "bin" / "python",
        help="the peers' virtualenv's python",
    )
    return p


def _run_options(p: argparse.ArgumentParser) -> None:
    every = ", ".join(SCENARIOS + OPTIONAL)
    p.add_argument("--only", type=_names, default=SCENARIOS, help=f"of {every}")
    p.add_argument("--workers", type=_ints, default=(1, 2, 4), help="worker processes per run")
    p.add_argument("--concurrency", type=int, default=env_int("BENCH_CONCURRENCY", 16))
    p.add_argument("--rates", type=_ints, default=(200, 1000), help="latency: jobs/s")
    p.add_argument("--latency-seconds", type=float, default=env_float("BENCH_LATENCY_SECONDS", 5))
    p.add_argument("--latency-workers", type=int, default=2)
    p.add_argument("--profile", type=Path, default=None, help="py-spy output dir")
    p.add_argument(
        "--projection-events", type=int, default=30_000, help="projection: events to apply"
    )
    p.add_argument("--partitions", type=_ints, default=(1, 2), help="partitions: counts to compare")
    p.add_argument(
        "--metrics",
        choices=("on", "off", "both"),
        default=os.environ.get("BENCH_METRICS", "on"),
        help="processing with Prometheus metrics collected and served (on, the default), "
        "without (off: FQ_METRICS_ENABLED=false), or each in turn (both: the cost)",
    )


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    # Each scenario is imported where it runs: they need the product's venv (`peers` must
    # not), and an A/B's older tree (bench/ab.py) lacks what newer scenarios import.
    from bench.report import machine

    unknown = set(args.only) - set(SCENARIOS + OPTIONAL)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {"machine": machine(), "jobs": args.jobs}
    if "baseline" in args.only:
        from bench.scenarios import baseline

        log.info("baseline: raw JetStream, %d messages", args.jobs)
        results["baseline"] = await baseline.run(args.jobs)
    if "enqueue" in args.only:
        from bench.scenarios import enqueue

        log.info("enqueue: %d jobs per path", args.jobs)
        results["enqueue"] = await enqueue.run(args.jobs)
    if "processing" in args.only:
        from bench.scenarios import processing

        results["processing"] = []
        modes = {"on": (True,), "off": (False,), "both": (False, True)}[args.metrics]
        for workers in args.workers:
            for metrics in modes:
                log.info(
                    "processing: %d jobs, %d worker(s), metrics %s",
                    args.jobs,
                    workers,
                    "on" if metrics else "off",
                )
                results["processing"].append(
                    await processing.run(
                        args.jobs,
                        workers,
                        concurrency=args.concurrency,
                        profile_dir=args.profile,
                        metrics=metrics,
                    )
                )
    if "latency" in args.only:
        from bench.scenarios import latency

        log.info("latency: %s jobs/s for %.0fs each", args.rates, args.latency_seconds)
        results["latency"] = await latency.run(
            args.rates,
            seconds=args.latency_seconds,
            workers=args.latency_workers,
            concurrency=args.concurrency,
        )
    if "projection" in args.only:
        from bench.scenarios import projection

        log.info("projection: %d events, in process", args.projection_events)
        results["projection"] = projection.run(args.projection_events)
    if "partitions" in args.only:
        from bench.scenarios import partitions

        log.info("partitions: %d events, %s partitions", args.projection_events, args.partitions)
        results["partitions"] = partitions.run(args.projection_events, args.partitions)
    if "durability" in args.only:
        from bench.scenarios import durability

        log.info("durability: default fsync against sync_interval: always, %d jobs", args.jobs)
        results["durability"] = await durability.run(args.jobs, concurrency=args.concurrency)
    if "dashboard" in args.only:
        from bench.scenarios import dashboard

        log.info("dashboard: page loads with %d jobs in the read store", args.jobs)
        results["dashboard"] = await dashboard.run(args.jobs)
    return results


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parser().parse_args()
    if args.command == "peers":
        from bench.peers.runner import run_peers
        from bench.report import peers_markdown, write_json

        results = asyncio.run(run_peers(args))
        path = write_json(results, args.out, prefix="peers-")
        print(peers_markdown(results))
    else:
        from bench.report import markdown, write_json

        results = asyncio.run(run_all(args))
        path = write_json(results, args.out)
        print(markdown(results))
    print(f"\nJSON: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


if __name__ == "__main__":
    main()
