"""A picture of what the Grafana board (deploy/grafana/ferrisqueue.json) draws, without
Grafana or Prometheus: run a local system under a varying load, scrape every service's
``/metrics`` every 2 s, compute the board's panels from the scrapes (rates and histogram
quantiles as PromQL computes them, over a 10 s window for a short run), and render them.

    .venv/bin/python -m bench.board_preview collect /tmp/board.json       # ~90 s
    <a python with matplotlib> bench/board_preview.py render /tmp/board.json docs/metrics-board.png

``collect`` needs the product's venv; ``render`` needs only matplotlib (not a dependency of
the product: use any venv that has it), so this module imports neither at the top.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

WINDOW = 10.0
"""Seconds of the rate and quantile windows (the board uses 5 min; the run is 90 s)."""
SCRAPE_EVERY = 2.0
PHASES = ((25.0, 10.0), (25.0, 40.0), (40.0, 5.0))
"""(seconds, jobs per second): steady, a burst the workers (2 x 4 slots, ~24 jobs/s of these
jobs) cannot keep up with, a lull in which the backlog drains."""

Samples = dict[str, list[tuple[dict[str, str], float]]]
"""Sample name -> (labels, value) of one scrape of every target."""


async def _collect() -> list[tuple[float, Samples]]:
    """Run the system under :data:`PHASES` and return every scrape."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from bench.harness import system

    with system() as sys_:
        await sys_.topology()
        sys_.spawn("projections")
        sys_.spawn("scheduler")
        for i in range(2):
            sys_.spawn(
                "worker",
                FQ_WORKER_ID=f"board-w{i + 1}",
                FQ_WORKER_CONCURRENCY="4",
                FQ_RETRY_BASE="0.5",
            )
        await sys_.start_gateway()
        targets = [f"http://127.0.0.1:{port}/metrics" for port in sys_.metrics_ports.values()]
        targets.append(f"{sys_.gateway_url}/metrics")
        snapshots: list[tuple[float, Samples]] = []
        began = time.monotonic()
        async with httpx.AsyncClient(timeout=5) as http:

            async def scrape() -> None:
                merged: Samples = defaultdict(list)
                for url in targets:
                    try:
                        text = (await http.get(url)).text
                    except httpx.TransportError:
                        continue  # a service still starting: its samples are missing once
                    for family in text_string_to_metric_families(text):
                        for s in family.samples:
                            merged[s.name].append((dict(s.labels), s.value))
                snapshots.append((time.monotonic() - began, dict(merged)))

            async def submit() -> None:
                """Open loop: each job is sent at its time, whatever the earlier ones did."""
                rng = random.Random(17)
                sent: set[asyncio.Task[Any]] = set()
                for seconds, rate in PHASES:
                    phase_end = time.monotonic() + seconds
                    while time.monotonic() < phase_end:
                        post = http.post(f"{sys_.gateway_url}/jobs", json=_job(rng))
                        task = asyncio.create_task(post)
                        sent.add(task)
                        task.add_done_callback(sent.discard)
                        await asyncio.sleep(1 / rate)  # a load generator's pacing
                await asyncio.gather(*sent)

            load = asyncio.create_task(submit())
            while not load.done():
                await scrape()
                await asyncio.sleep(SCRAPE_EVERY)  # the scrape interval
            await load
            for _ in range(int(WINDOW / SCRAPE_EVERY) + 1):  # let the rates fall back
                await asyncio.sleep(SCRAPE_EVERY)
                await scrape()
    return snapshots


def _job(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.05:
        return {"type": "fail"}
    if roll < 0.15:
        return {"type": "flaky"}
    return {"type": "sleep", "payload": {"seconds": round(rng.uniform(0.05, 0.6), 3)}}


def _sum(
    snapshot: Samples, name: str, where: Callable[[dict[str, str]], bool] = lambda _: True
) -> float:
    return sum(v for labels, v in snapshot.get(name, []) if where(labels))


def _by(snapshot: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for labels, value in snapshot.get(name, []):
        out[labels.get(label, "")] += value
    return out


def _quantile(q: float, buckets: dict[float, float]) -> float | None:
    """PromQL's histogram_quantile over cumulative bucket counts (upper bound -> count)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(
                count - lower_count, 1e-12
            )
        lower_bound, lower_count = bound, count
    return None


def _buckets(snapshot: Samples, name: str) -> dict[float, float]:
    out: dict[float, float] = defaultdict(float)
    for labels, value in snapshot.get(f"{name}_bucket", []):
        out[float(labels["le"])] += value
    return out


def panels(snapshots: list[tuple[float, Samples]]) -> dict[str, Any]:
    """The board's panels, as series of (seconds, value), from the scrapes."""
    series: dict[str, dict[str, list[tuple[float, float | None]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    lag = int(WINDOW / SCRAPE_EVERY)
    for i, (t, now) in enumerate(snapshots):
        if i < lag:
            continue
        then = snapshots[i - lag][1]
        span = t - snapshots[i - lag][0]

        def rate(name: str, where: Callable[[dict[str, str]], bool] = lambda _: True) -> float:
            return max(0.0, _sum(now, name, where) - _sum(then, name, where)) / span  # noqa: B023

        finished = rate("fq_jobs_finished_total")
        failed = rate("fq_jobs_finished_total", lambda lb: lb.get("outcome") == "failed")
        panel = series["Throughput (jobs/s)"]
        panel["finished"].append((t, finished))
        panel["submitted"].append((t, rate("fq_jobs_submitted_total")))
        panel = series["Failure rate (failed / finished)"]
        panel["jobs"].append((t, failed / finished if finished else None))
        attempts = rate("fq_job_attempts_total")
        failed_attempts = rate("fq_job_attempts_total", lambda lb: lb.get("outcome") == "failed")
        panel["attempts"].append((t, failed_attempts / attempts if attempts else None))
        for title, name in (
            ("Wait time, s (runnable to started)", "fq_job_wait_seconds"),
            ("Run time, s (one attempt)", "fq_job_run_seconds"),
        ):
            new, old = _buckets(now, name), _buckets(then, name)
            window = {b: new[b] - old.get(b, 0.0) for b in new}
            for q in (0.5, 0.95, 0.99):
                series[title][f"p{int(q * 100)}"].append((t, _quantile(q, window)))
        for state, value in _by(now, "fq_queue_depth", "state").items():
            series["Queue depth (default)"][state].append((t, value))
        dead = _sum(now, "fq_dead_letters_total") - _sum(snapshots[0][1], "fq_dead_letters_total")
        series["Dead letters (since start)"]["default"].append((t, dead))
        panel = series["Projection lag (jobs)"]
        panel["seconds"].append((t, _sum(now, "fq_projection_lag_seconds")))
        panel["events / 100"].append((t, _sum(now, "fq_projection_lag_events") / 100))
        panel = series["Worker slots"]
        panel["busy"].append((t, _sum(now, "fq_worker_busy_slots")))
        panel["slots"].append((t, _sum(now, "fq_worker_slots")))
    return {"window_s": WINDOW, "panels": series}


def render(data_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(data_path.read_text())
    titles = list(data["panels"])
    fig, axes = plt.subplots(4, 2, figsize=(13, 13), constrained_layout=True)
    for ax, title in zip(axes.flat, titles, strict=False):
        for legend, points in data["panels"][title].items():
            xs = [p[0] for p in points if p[1] is not None]
            ys = [p[1] for p in points if p[1] is not None]
            ax.plot(xs, ys, label=legend, linewidth=1.6)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("seconds into the run", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
        ax.tick_params(labelsize=8)
    fig.suptitle(
        "FerrisQueue board: the panels of deploy/grafana/ferrisqueue.json, computed from "
        f"/metrics scrapes of a local run ({data['window_s']:g} s windows)",
        fontsize=12,
    )
    fig.savefig(png, dpi=80)
    print(f"wrote {png}")


if __name__ == "__main__":
    command, *paths = sys.argv[1:]
    if command == "collect":
        from ferrisqueue import runloop

        snapshots = runloop.run(_collect())
        Path(paths[0]).write_text(json.dumps(panels(snapshots), indent=1))
        print(f"wrote {paths[0]} ({len(snapshots)} scrapes)")
    elif command == "render":
        render(Path(paths[0]), Path(paths[1]))
    else:
        raise SystemExit(__doc__)
