"""What every peer's measurement shares (standard library only).

The no-op task of every peer calls :func:`done`, which sends one UDP datagram to the
measuring process on 127.0.0.1: a single non-blocking syscall, no round trip, the same
for every peer. The measuring process counts them and takes the time from the first to the
last, the peers' equivalent of "first started to last succeeded". Jobs are enqueued before
the workers start, as in FerrisQueue's processing benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

UDP_PORT_ENV = "BENCH_UDP_PORT"
PREFIX_ENV = "BENCH_PREFIX"
REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
REPO = Path(__file__).resolve().parent.parent.parent

_socket: socket.socket | None = None
_address: tuple[str, int] | None = None


def done() -> None:
    """Called by the no-op task of every peer: one datagram per finished job."""
    global _socket, _address
    if _socket is None:
        _socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _address = ("127.0.0.1", int(os.environ[UDP_PORT_ENV]))
    assert _address is not None
    _socket.sendto(b".", _address)


def prefix() -> str:
    """The run's unique name: queue names and key prefixes start with it."""
    return os.environ[PREFIX_ENV]


class Receiver:
    """Counts the datagrams of :func:`done` on a thread; first and last arrival times."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 2**20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buffer = bytearray(64)
        while not self._stop.is_set():
            try:
                self.sock.recv_into(buffer)
            except TimeoutError:
                continue
            now = time.monotonic()
            if not self.count:
                self.first = now
            self.last = now
            self.count += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    return tree


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def options(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nats-url", default=None)
    return parser.parse_args()


def measure(
    name: str,
    *,
    jobs: int,
    enqueue: Callable[[], None],
    worker_argv: list[str],
    env: dict[str, str],
    cleanup: Callable[[], None],
) -> dict[str, Any]:
    """Enqueue ``jobs`` (timed), start the workers, wait until all are done (bounded), stop
    the workers by pid, clean up what the run created; the numbers as a dict."""
    receiver = Receiver()
    env = {**os.environ, **env, UDP_PORT_ENV: str(receiver.port), "PYTHONPATH": str(REPO)}
    os.environ.update({k: v for k, v in env.items() if k.startswith("BENCH_")})
    result: dict[str, Any] = {"name": name, "jobs": jobs}
    worker: subprocess.Popen[bytes] | None = None
    seen: set[int] = set()
    peak = 0.0
    logs = REPO / "bench" / "results"
    logs.mkdir(exist_ok=True)
    log_path = logs / f"{prefix()}.log"
    try:
        began = time.perf_counter()
        enqueue()
        result["enqueue_per_s"] = round(jobs / (time.perf_counter() - began), 1)
        log = open(log_path, "wb")  # noqa: SIM115 - the worker's; closed once it has it
        worker = subprocess.Popen(
            worker_argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 60 + jobs / 50
        next_sample = 0.0
        while receiver.count < jobs:
            if worker.poll() is not None:
                raise RuntimeError(f"{name}: the worker exited with {worker.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: {receiver.count} of {jobs} done in time")
            if time.monotonic() >= next_sample:
                for pid in process_tree(worker.pid):
                    seen.add(pid)
                    peak = max(peak, peak_rss_mib(pid) or 0.0)
                next_sample = time.monotonic() + 0.5
            time.sleep(0.02)
        for pid in process_tree(worker.pid):
            peak = max(peak, peak_rss_mib(pid) or 0.0)
        seconds = receiver.last - receiver.first
        result.update(
            seconds=round(seconds, 3),
            jobs_per_s=round(jobs / seconds, 1) if seconds > 0 else None,
            peak_rss_mib=round(peak, 1),
        )
        log_path.unlink(missing_ok=True)  # kept when the run failed
    finally:
        if worker is not None:
            _stop(worker, seen)
        receiver.close()
        cleanup()
    return result


def _stop(worker: subprocess.Popen[bytes], seen: set[int]) -> None:
    """SIGTERM the worker we started; SIGKILL it and any child of it we saw that is left."""
    seen |= set(process_tree(worker.pid))
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    for pid in seen - {worker.pid}:
        if _ours(pid):  # a descendant of our worker still running (never a reused pid)
            os.kill(pid, signal.SIGKILL)


def _ours(pid: int) -> bool:
    """Whether ``pid`` runs with this run's unique BENCH_PREFIX in its environment."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{PREFIX_ENV}={prefix()}".encode() in environ


def new_prefix(peer: str) -> str:
    return f"fqbench-{peer}-{uuid.uuid4().hex[:8]}"


def emit(result: dict[str, Any]) -> None:
    """The one line the runner reads."""
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
