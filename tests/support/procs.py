"""Real service processes for tests: started with their real entry points, stopped by pid."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ferrisqueue.settings import Settings


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a service needs to run with ``settings``: the machine's, minus any
    FQ_ variable of the developer's, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FQ_")}
    env.update(
        FQ_NATS_URL=settings.effective_nats_url,
        FQ_NATS_PORT=str(settings.nats_port),
        FQ_DATABASE_URL=settings.effective_database_url,
        FQ_VAR_DIR=str(settings.var_dir),
        FQ_GATEWAY_HOST=settings.gateway_host,
        FQ_GATEWAY_PORT=str(settings.gateway_port),
        FQ_ACK_WAIT=str(settings.ack_wait),
        FQ_WORKER_CONCURRENCY=str(settings.worker_concurrency),
        FQ_SHUTDOWN_GRACE=str(settings.shutdown_grace),
        FQ_LOG_LEVEL="INFO",
        FQ_AUTH=settings.auth.value,
    )
    env.update(extra)
    return env


@dataclass
class ServiceProcess:
    """One child process and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait; returns the exit code (SIGKILL after ``timeout``)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.alive():
            self.process.kill()
        self.process.wait()


def start_service(name: str, argv: list[str], env: dict[str, str], cwd: Path) -> ServiceProcess:
    log_path = cwd / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServiceProcess(name, process, log_path)


def module_argv(module: str) -> list[str]:
    return [sys.executable, "-m", module]


FQ = str(Path(sys.executable).parent / "fq")
"""The `fq` console script of this environment."""


async def run_fq(
    settings: Settings, cwd: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``fq ARGS`` against the services of ``settings`` (in a thread; 60 s at most),
    with ``env`` added to its environment (``FQ_API_KEY=...``, say)."""
    return await asyncio.to_thread(
        subprocess.run,
        [FQ, *args],
        env=service_env(settings, **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def command_line(pid: int) -> list[str]:
    """A process's argv ([] once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
