"""A 3-node JetStream cluster on loopback for fault tests: three nats-server processes of the
pinned binary, each on free client and route ports with its own data dir, joined by
``cluster { name, routes }``. Nodes are killed (SIGKILL) and restarted by the pid we started,
keeping their data dir, as a crashed and rebooted machine would."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import ClusterInfo

from ferrisqueue.log.embedded import free_port, port_in_use, server_binary
from tests.support.waits import wait_until

CLUSTER_NAME = "fq-test"


@dataclass
class Node:
    """One nats-server of the cluster."""

    name: str
    data_dir: Path
    port: int
    route_port: int
    monitor_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def write_config(self, routes: list[int]) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "nats-server.conf"
        route_list = "\n".join(f"    nats-route://127.0.0.1:{port}" for port in routes)
        config.write_text(
            f"server_name: {self.name}\nhost: 127.0.0.1\nport: {self.port}\nmax_payload: 1MB\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            f'jetstream {{\n  store_dir: "{self.data_dir / "jetstream"}"\n}}\n'
            f"cluster {{\n  name: {CLUSTER_NAME}\n  host: 127.0.0.1\n  port: {self.route_port}\n"
            f"  routes: [\n{route_list}\n  ]\n}}\n"
        )
        return config

    def start(self, routes: list[int]) -> None:
        if port_in_use(self.port):
            raise RuntimeError(f"{self.name}: port {self.port} was taken meanwhile")
        config = self.write_config(routes)
        with open(self.data_dir / "nats-server.log", "ab") as log:
            self.process = subprocess.Popen(
                [server_binary(), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def terminate(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class NatsCluster:
    """Three nodes named ``n1``..``n3``; :attr:`url` lists all three for clients."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.nodes = [
            Node(f"n{i}", root / f"n{i}", free_port(), free_port(), free_port())
            for i in range(1, size + 1)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def routes(self) -> list[int]:
        return [node.route_port for node in self.nodes]

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    async def serving(self, client_name: str) -> Node | None:
        """The node a client (by its connection name) is connected to now, from each live
        node's ``/connz`` monitoring endpoint."""
        async with httpx.AsyncClient(timeout=2) as http:
            for node in self.nodes:
                if not node.alive():
                    continue
                with contextlib.suppress(httpx.HTTPError):
                    answer = await http.get(f"http://127.0.0.1:{node.monitor_port}/connz")
                    names = [c.get("name") for c in answer.json().get("connections") or []]
                    if client_name in names:
                        return node
        return None

    def start(self) -> None:
        for node in self.nodes:
            node.start(self.routes)

    def restart(self, node: Node) -> None:
        node.start(self.routes)

    def stop(self) -> None:
        for node in self.nodes:
            node.terminate()

    async def wait_ready(self, *, timeout: float = 30.0) -> None:
        """Wait until every node listens and JetStream answers (its meta leader is elected)."""
        await wait_until(
            lambda: asyncio.sleep(0, all(port_in_use(n.port) for n in self.nodes)),
            bool,
            timeout=timeout,
            what="every node listening",
        )
        nc = await nats.connect(self.url.split(","))
        try:
            await wait_until(
                lambda: _jetstream_answers(nc),
                bool,
                timeout=timeout,
                what="a JetStream meta leader",
            )
        finally:
            await nc.close()


_UNANSWERED = (nats.errors.Error, nats.js.errors.Error, TimeoutError)


async def _jetstream_answers(nc: Client) -> bool:
    try:
        await nc.jetstream().account_info()
    except _UNANSWERED:
        return False
    return True


async def _cluster(info: Awaitable[Any]) -> ClusterInfo | None:
    """The cluster part of a stream's or consumer's info, or None while JetStream does not
    answer (an election, or too few nodes for a quorum)."""
    try:
        found: ClusterInfo | None = (await info).cluster
    except _UNANSWERED:
        return None
    return found


async def stream_leader(nc: Client, stream: str) -> str | None:
    """The server name leading ``stream`` now, or None while it has none."""
    cluster = await _cluster(nc.jetstream().stream_info(stream))
    return cluster.leader if cluster else None


async def consumer_leader(nc: Client, stream: str, consumer: str) -> str | None:
    """The server name leading ``consumer`` of ``stream`` now, or None while it has none."""
    cluster = await _cluster(nc.jetstream().consumer_info(stream, consumer))
    return cluster.leader if cluster else None


async def stream_whole(nc: Client, stream: str) -> bool:
    """Whether ``stream`` has a leader and every other replica is current (a restarted node
    has caught up): the cluster can lose one more node without losing its quorum."""
    cluster = await _cluster(nc.jetstream().stream_info(stream))
    if cluster is None or not cluster.leader or not cluster.replicas:
        return False
    return all(peer.current for peer in cluster.replicas)
