"""The run's results as JSON (``bench/results/<timestamp>.json``) and as Markdown tables."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import REPO
from ferrisqueue.log.embedded import server_binary


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        server = subprocess.run(
            [server_binary(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except Exception:  # the version is a nicety of the report
        server = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except Exception:
        commit = "unknown"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "nats_server": server,
        "commit": commit,
    }


def write_json(results: dict[str, Any], out_dir: Path, prefix: str = "") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{prefix}{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "-"
    return f"{ours / theirs:.2f}x"


def _cpu(per_job: dict[str, float] | None) -> str:
    """Workers / projector / scheduler / nats-server (a result from before the scheduler was
    measured shows "-" for it) and their total."""
    if not per_job:
        return "-"
    parts = [per_job.get(name) for name in ("workers", "projector", "scheduler", "nats")]
    total = sum(part for part in parts if part is not None)
    return " / ".join(_n(part) for part in parts) + f" = {_n(total)}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def markdown(results: dict[str, Any]) -> str:
    """The tables of a ``python -m bench`` run."""
    meta = results.get("machine", {})
    out = [
        f"Measured {meta.get('date', '?')} on {meta.get('cpus', '?')} CPUs "
        f"({meta.get('cpu', '?')}), Python {meta.get('python', '?')}, "
        f"{meta.get('nats_server', '?')}, commit {meta.get('commit', '?')}.",
        "",
    ]
    base = results.get("baseline", {})
    raw_pub = base.get("publish_async", {}).get("msgs_per_s")
    if enqueue := results.get("enqueue"):
        out += ["### Enqueue (acknowledged by JetStream)", ""]
        out += _table(
            [
                "path",
                "jobs",
                "jobs/s",
                "vs raw publish_async",
                "CPU µs/job gateway / client",
            ],
            [
                [
                    r["path"],
                    _n(r["jobs"]),
                    _n(r["jobs_per_s"]),
                    _ratio(r["jobs_per_s"], raw_pub),
                    f"{_n(r['gateway_cpu_us_per_job'])} / {_n(r['client_cpu_us_per_job'])}"
                    if "gateway_cpu_us_per_job" in r
                    else "-",
                ]
                for r in enqueue
            ],
        )
    if processing := results.get("processing"):
        out += ["### Processing (no-op jobs, projector running)", ""]
        rows = []
        for r in processing:
            lag = r["projection"]
            raw = base.get(f"fetch_ack_{r['workers']}", {}).get("msgs_per_s")
            raw_jobs = base.get(f"job_messages_{r['workers']}", {}).get("msgs_per_s")
            rss = [x for x in r["worker_peak_rss_mib"] if x is not None]
            rows.append(
                [
                    str(r["workers"]),
                    "on" if r.get("metrics", True) else "off",
                    _n(r["jobs"]),
                    _n(r["jobs_per_s"]),
                    _ratio(r["jobs_per_s"], raw),
                    _ratio(r["jobs_per_s"], raw_jobs),
                    f"{_n(lag['lag_s_p50'], 2)} / {_n(lag['lag_s_p99'], 2)} / "
                    f"{_n(lag['lag_s_max'], 2)}",
                    f"{_n(lag['lag_events_p50'])} / {_n(lag['lag_events_p99'])} / "
                    f"{_n(lag['lag_events_max'])}",
                    _n(r["projection_catch_up_s"], 2),
                    f"{r['completed_in_read_store']:,}/{r['jobs']:,}",
                    _n(max(rss, default=None), 1),
                    _cpu(r.get("cpu_us_per_job")),
                ]
            )
        out += _table(
            [
                "workers",
                "metrics",
                "jobs",
                "jobs/s",
                "vs raw fetch+ack",
                "vs raw job messages",
                "projection lag s p50/p99/max",
                "lag events p50/p99/max",
                "catch-up s",
                "completed in store",
                "worker peak RSS MiB",
                "CPU µs/job workers/projector/scheduler/nats = total",
            ],
            rows,
        )
    if latency := results.get("latency"):
        out += ["### End-to-end latency (ms, open-loop)", ""]
        out += _table(
            [
                "path",
                "rate/s",
                "jobs",
                "late sends / unanswered / shed (503)",
                "ack p50/p99",
                "start p50/p95/p99",
                "succeeded p50/p95/p99",
            ],
            [
                [
                    r["path"],
                    _n(r["rate"]),
                    _n(r["jobs"]),
                    f"{_n(r['late_submissions'])} / {_n(r.get('unanswered', 0))}"
                    f" / {_n(r.get('shed', 0))}",
                    _pct(r["submit_to_ack_ms"], (50, 99)),
                    _pct(r["submit_to_start_ms"], (50, 95, 99)),
                    _pct(r["submit_to_succeeded_ms"], (50, 95, 99)),
                ]
                for r in latency
            ],
        )
    if projection := results.get("projection"):
        out += ["### Projector in process (decode + apply, no NATS)", ""]
        out += _table(
            ["store", "events", "events/s", "decode µs/event", "apply µs/event CPU / wall"],
            [
                [
                    r["store"],
                    _n(r["events"]),
                    _n(r["events_per_s"]),
                    _n(r["decode_us"], 1),
                    f"{_n(r['apply_cpu_us'], 1)} / {_n(r['apply_wall_us'], 1)}",
                ]
                for r in projection
            ],
        )
    if partitioned := results.get("partitions"):
        out += ["### Partitions of the jobs projection (one process each, no NATS)", ""]
        out += _table(
            ["store", "partitions", "events", "events/s", "CPU µs/event (all)", "each s"],
            [
                [
                    r["store"],
                    str(r["partitions"]),
                    _n(r["events"]),
                    _n(r["events_per_s"]),
                    _n(r["cpu_us_per_event"], 1),
                    " / ".join(str(t) for t in r["per_partition_s"]),
                ]
                for r in partitioned
            ],
        )
    if durability := results.get("durability"):
        out += ["### Durability profiles (fsync policy of the server)", ""]
        out += _table(
            [
                "profile",
                "append alone ms p50/p99",
                "appends/s (in flight)",
                "append under load ms p50/p99",
                "processing jobs/s (workers)",
                "CPU µs/job workers/projector/scheduler/nats = total",
            ],
            [
                [
                    r["profile"],
                    _pct(r["alone_ms"], (50, 99)),
                    f"{_n(r['appends_per_s'])} ({r['in_flight']})",
                    _pct(r["loaded_ms"], (50, 99)),
                    f"{_n(r['processing']['jobs_per_s'])} ({r['processing']['workers']})",
                    _cpu(r["processing"].get("cpu_us_per_job")),
                ]
                for r in durability
            ],
        )
    if base:
        out += [f"### Raw JetStream baseline ({base['message_bytes']}-byte messages)", ""]
        rows = [["publish_async (file stream, 1,000 in flight)", _n(raw_pub), "-"]]
        for key in sorted(k for k in base if k.startswith("fetch_ack_")):
            rows.append(
                [
                    f"pull fetch + ack, {base[key]['processes']} process(es)",
                    _n(base[key]["msgs_per_s"]),
                    _raw_cpu(base[key]),
                ]
            )
        for key in sorted(k for k in base if k.startswith("job_messages_")):
            rows.append(
                [
                    "a job's messages (fetch, guarded started + outcome acknowledged, ack), "
                    f"{base[key]['processes']} process(es); jobs/s",
                    _n(base[key]["msgs_per_s"]),
                    _raw_cpu(base[key]),
                ]
            )
        out += _table(["what", "msgs/s", "CPU µs/msg consumers/nats"], rows)
    if dashboard := results.get("dashboard"):
        from bench.scenarios.dashboard import markdown as dashboard_markdown

        out += dashboard_markdown(dashboard)
    return "\n".join(out)


def _pct(values: dict[str, float | None], qs: tuple[int, ...]) -> str:
    return " / ".join(_n(values.get(f"p{q}"), 2) for q in qs)


def peers_markdown(results: dict[str, Any]) -> str:
    """The table of a ``python -m bench peers`` run (medians of the runs)."""
    meta = results.get("machine", {})
    out = [
        f"Measured {meta.get('date', '?')} on {meta.get('cpus', '?')} CPUs "
        f"({meta.get('cpu', '?')}); {results['jobs']:,} no-op jobs, {results['workers']} worker "
        f"processes, median of {results['runs']} run(s).",
        "",
    ]
    rows = []
    for peer in results["peers"]:
        rows.append(
            [
                peer["name"],
                _n(peer.get("median_jobs_per_s")),
                ", ".join(_n(r.get("jobs_per_s")) for r in peer["runs"]) or peer.get("error", "-"),
                _n(peer.get("median_enqueue_per_s")),
                _n(peer.get("median_peak_rss_mib"), 1),
            ]
        )
    out += _table(
        ["peer", "jobs/s (median)", "runs", "enqueue/s (median)", "worker peak RSS MiB"], rows
    )
    return "\n".join(out)


def _raw_cpu(row: dict[str, Any]) -> str:
    cpu = row.get("cpu_us_per_msg") or {}
    return " / ".join(_n(cpu[k]) if cpu.get(k) is not None else "-" for k in ("consumers", "nats"))
