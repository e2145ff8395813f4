"""A 3-node JetStream cluster on loopback for fault tests: three nats-server processes of the
pinned binary, each running the production config of its node (``nats/server/cluster/``, as
docker-compose.yml mounts it) with only its ports, routes, store and monitoring bind remapped
to free loopback ports and its own data dir, and without its role users, so the tests check
the configs that ship. Nodes are
killed (SIGKILL) and restarted by the pid we started, keeping their data dir, as a crashed and
rebooted machine would."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ClusterInfo, ConsumerInfo, StreamInfo

from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.embedded import free_port, port_in_use, server_binary
from ferrisqueue.log.topology import PROJECTOR_CONSUMER
from tests.support.waits import wait_until

PRODUCTION_CONFIGS = Path(__file__).resolve().parents[2] / "nats" / "server" / "cluster"
"""The configs of docker-compose.yml's ``nats-1``..``nats-3``; a node is named by its file."""


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

    def write_config(self, routes: dict[str, int]) -> Path:
        """The production config of this node, remapped: the compose file's addresses become
        free loopback ports (``routes`` maps each node's name to its route port)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        text = (PRODUCTION_CONFIGS / f"{self.name}.conf").read_text()
        swaps = {
            "0.0.0.0:4222": f"127.0.0.1:{self.port}",
            "0.0.0.0:6222": f"127.0.0.1:{self.route_port}",
            "127.0.0.1:8222": f"127.0.0.1:{self.monitor_port}",
            "/data/jetstream": f'"{self.data_dir / "jetstream"}"',
            # Without the role users: the fault tests' clients and services connect
            # anonymously (the users are tested in tests/integration/test_nats_roles.py).
            "\ninclude roles.conf\n": "\n",
            **{f"{name}:6222": f"127.0.0.1:{port}" for name, port in routes.items()},
        }
        for old, new in swaps.items():
            if old not in text:  # the production config changed shape: remap it anew
                raise AssertionError(f"{self.name}.conf has no {old!r} to remap")
            text = text.replace(old, new)
        config = self.data_dir / "nats-server.conf"
        config.write_text(text)
        return config

    def start(self, routes: dict[str, int]) -> None:
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
    """The three production nodes ``nats-1``..``nats-3``; :attr:`url` lists all three."""

    def __init__(self, root: Path) -> None:
        self.nodes = [
            Node(path.stem, root / path.stem, free_port(), free_port(), free_port())
            for path in sorted(PRODUCTION_CONFIGS.glob("nats-*.conf"))
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def routes(self) -> dict[str, int]:
        return {node.name: node.route_port for node in self.nodes}

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


T = TypeVar("T")

PROBE_TIMEOUT = 1.0
"""Seconds a probe waits for JetStream's answer: while a stream has no leader its requests go
unanswered, and a short wait makes the moment a leader is back visible to the test."""

_UNANSWERED = (nats.errors.Error, nats.js.errors.Error, TimeoutError)


async def _jetstream_answers(nc: Client) -> bool:
    try:
        await _probe(nc).account_info()
    except _UNANSWERED:
        return False
    return True


def _probe(nc: Client) -> JetStreamContext:
    return nc.jetstream(timeout=PROBE_TIMEOUT)


async def _answered(info: Awaitable[T]) -> T | None:
    """A JetStream API answer, or None while JetStream does not answer (an election, or too
    few nodes for a quorum)."""
    try:
        return await info
    except _UNANSWERED:
        return None


async def _cluster(info: Awaitable[StreamInfo | ConsumerInfo]) -> ClusterInfo | None:
    """The cluster part of a stream's or consumer's info (None while no answer)."""
    answer = await _answered(info)
    return answer.cluster if answer is not None else None


async def consumer_state(nc: Client, consumer: str, stream: str) -> ConsumerInfo | None:
    """A durable consumer's info, or None while it does not exist or JetStream does not
    answer."""
    return await _answered(_probe(nc).consumer_info(stream, consumer))


async def stream_leader(nc: Client, stream: str) -> str | None:
    """The server name leading ``stream`` now, or None while it has none."""
    cluster = await _cluster(_probe(nc).stream_info(stream))
    return cluster.leader if cluster else None


async def consumer_leader(nc: Client, stream: str, consumer: str) -> str | None:
    """The server name leading ``consumer`` of ``stream`` now, or None while it has none."""
    cluster = await _cluster(_probe(nc).consumer_info(stream, consumer))
    return cluster.leader if cluster else None


async def stream_whole(nc: Client, stream: str) -> bool:
    """Whether ``stream`` has a leader and every other replica is current (a restarted node
    has caught up): the cluster can lose one more node without losing its quorum."""
    cluster = await _cluster(_probe(nc).stream_info(stream))
    if cluster is None or not cluster.leader or not cluster.replicas:
        return False
    return all(peer.current for peer in cluster.replicas)


async def replica_current(nc: Client, stream: str, name: str) -> bool:
    """Whether node ``name`` holds a current replica of ``stream`` (it leads it, or follows
    and has caught up): a restarted node has fetched what was stored while it was down."""
    cluster = await _cluster(_probe(nc).stream_info(stream))
    if cluster is None or not cluster.leader:
        return False
    return cluster.leader == name or any(
        peer.name == name and peer.current for peer in cluster.replicas or []
    )


async def log_reaches(nc: Client, seq: int, *, timeout: float = 90.0) -> None:
    """Wait until ``FQ_EVENTS`` holds ``seq`` messages (asked again through elections)."""

    async def last() -> int:
        info = await _answered(_probe(nc).stream_info(EVENT_STREAM))
        return info.state.last_seq if info is not None else 0

    await wait_until(last, lambda now: now >= seq, timeout=timeout, what=f"the log at {seq}")


async def writes_refused(nc: Client) -> bool:
    """Whether an R3 stream cannot store a message now (no quorum). The probe goes to the
    heartbeat stream, where the projector skips what is not a heartbeat."""
    try:
        await nc.jetstream().publish("fq.worker.probe.heartbeat", b"probe", timeout=PROBE_TIMEOUT)
    except _UNANSWERED:
        return True
    return False


async def projector_node(nc: Client, cluster: NatsCluster) -> str | None:
    """The node serving the projector's connection (deliveries in flight to it are cut), or
    the one leading its consumer while ``/connz`` does not show the projector."""
    serving = await cluster.serving("fq-projector")
    return serving.name if serving else await consumer_leader(nc, EVENT_STREAM, PROJECTOR_CONSUMER)


async def local_last_seqs(cluster: NatsCluster, stream: str = EVENT_STREAM) -> dict[str, int]:
    """The last sequence of each live node's own replica of ``stream``, from its ``/jsz``
    monitoring endpoint (not the leader's view: what the node itself stores)."""
    found: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=2) as http:
        for node in cluster.nodes:
            if not node.alive():
                continue
            with contextlib.suppress(httpx.HTTPError, ValueError):
                url = f"http://127.0.0.1:{node.monitor_port}/jsz?accounts=true&streams=true"
                accounts = (await http.get(url)).json().get("account_details") or []
                for detail in (d for a in accounts for d in a.get("stream_detail") or []):
                    if detail.get("name") == stream:
                        found[node.name] = detail["state"]["last_seq"]
    return found
