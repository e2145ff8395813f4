"""``python -m bench peers``: the processing workload on each peer, ``runs`` times, medians.

Runs in the product's venv: it starts an embedded nats-server (a free port, its own temp
dir; never 4222) for taskiq-nats, then runs each peer's module with the peers' venv's
python, one subprocess per run (bounded in time), and reads the JSON line it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import socket
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import REPO
from bench.report import machine
from ferrisqueue.log.embedded import EmbeddedNats, free_port

log = logging.getLogger(__name__)

PEERS: dict[str, tuple[str, str, tuple[str, int] | None]] = {
    # name: (module, --broker, a service that must be listening)
    "celery-redis": ("bench.peers.celery_peer", "redis", ("127.0.0.1", 6379)),
    "celery-rabbitmq": ("bench.peers.celery_peer", "rabbitmq", ("127.0.0.1", 5672)),
    "dramatiq-redis": ("bench.peers.dramatiq_peer", "redis", ("127.0.0.1", 6379)),
    "taskiq-redis": ("bench.peers.taskiq_peer", "redis", ("127.0.0.1", 6379)),
    "taskiq-nats": ("bench.peers.taskiq_peer", "nats", None),
    "taskiq-nats-b100": ("bench.peers.taskiq_peer", "nats-b100", None),
}


async def run_peers(args: argparse.Namespace) -> dict[str, Any]:
    return await asyncio.to_thread(_run_peers, args)


def _run_peers(args: argparse.Namespace) -> dict[str, Any]:
    python = Path(args.python)
    if not python.exists():
        raise SystemExit(f"{python} is missing: `make bench-peers` creates the peers' venv")
    names = args.only or tuple(PEERS)
    unknown = set(names) - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown peer(s): {', '.join(sorted(unknown))}; of {', '.join(PEERS)}")
    root = Path(tempfile.mkdtemp(prefix="fq-bench-peers-"))
    server = EmbeddedNats(root / "nats", free_port())
    server.start()
    try:
        peers = [_peer(name, python, server.url, args) for name in names]
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "machine": machine(),
        "jobs": args.jobs,
        "workers": args.workers,
        "runs": args.runs,
        "peers": peers,
    }


def _peer(name: str, python: Path, nats_url: str, args: argparse.Namespace) -> dict[str, Any]:
    module, broker, needs = PEERS[name]
    if needs is not None and not _listening(*needs):
        log.warning("%s: nothing listens on %s:%d; skipped", name, *needs)
        return {"name": name, "runs": [], "error": f"nothing listens on {needs[0]}:{needs[1]}"}
    argv = [str(python), "-m", module, "--broker", broker, "--jobs", str(args.jobs)]
    argv += ["--workers", str(args.workers), "--nats-url", nats_url]
    runs: list[dict[str, Any]] = []
    error = None
    for run in range(args.runs):
        log.info("%s: run %d of %d, %d jobs", name, run + 1, args.runs, args.jobs)
        try:
            done = subprocess.run(
                argv, cwd=REPO, capture_output=True, text=True, timeout=120 + args.jobs / 50
            )
        except subprocess.TimeoutExpired:
            error = "timed out"
            break
        if done.returncode != 0:
            error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
            log.warning("%s failed:\n%s", name, done.stderr[-2000:])
            break
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    result: dict[str, Any] = {"name": name, "runs": runs}
    if error:
        result["error"] = error
    for key in ("jobs_per_s", "enqueue_per_s", "peak_rss_mib"):
        values = [r[key] for r in runs if r.get(key) is not None]
        result[f"median_{key}"] = statistics.median(values) if values else None
    return result


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0
