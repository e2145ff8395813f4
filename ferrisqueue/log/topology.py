"""Streams and consumers, created or updated idempotently from the JetStream JSON.

The definitions are package data (``ferrisqueue/log/jetstream/``, read with
:mod:`importlib.resources`, so an installed wheel has them as a checkout does). They are the
JetStream API's own JSON, so the ``nats`` CLI applies the same files: in a checkout,
``nats/jetstream`` is a symlink to that folder, and
``nats stream add --config nats/jetstream/streams/FQ_EVENTS.json`` works. Code applies them through
the log port (:meth:`~ferrisqueue.log.port.LogPort.ensure_stream` / ``ensure_consumer``): the
NATS adapter sends them to the same API (``$JS.API.STREAM.CREATE`` / ``UPDATE`` and
``$JS.API.CONSUMER.CREATE``), the in-memory log builds its streams and consumers from them, so
there is one source of truth for the topology, and tests run on the shipped one.

A worker's dispatch consumer is defined once, for the ``default`` queue; other queues get the
same definition with the queue name swapped in.

Who applies them: ``fq init`` (the ``admin`` NATS role) always. A service that connects as a
NATS role only verifies that what it uses exists (:func:`prepare_streams`,
:func:`prepare_consumer`) and says "run `fq init`" if not; one that connects anonymously (a
server without users: tests, a bare local server) creates them as it always did.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from ferrisqueue.domain.subjects import DEFAULT_PRIORITY, EVENT_STREAM, LANES, runnable_filters
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.log.port import LogPort
from ferrisqueue.settings import Settings

_NANOS = 1_000_000_000
_BACKOFF_STEPS = 6  # redelivery waits double up to 32x AckWait

DEFINITIONS_PACKAGE = "ferrisqueue.log"
DEFINITIONS_FOLDER = "jetstream"

PROJECTOR_CONSUMER = "fq-projector"


WORKER_CONSUMER_PREFIX = "fq-worker-"
_LANE_CONSUMER = re.compile(r"fq-lane(\d)-(.+)")


def worker_consumer_name(queue: str, priority: int = DEFAULT_PRIORITY) -> str:
    """``fq-worker-<queue>`` for the default lane, ``fq-lane<n>-<queue>`` for lane ``n``: a
    prefix of its own, so no queue name can read as another queue's lane."""
    if priority == DEFAULT_PRIORITY:
        return f"{WORKER_CONSUMER_PREFIX}{queue}"
    return f"fq-lane{priority}-{queue}"


def queue_of_consumer(name: str) -> str | None:
    """The queue a worker consumer (of any lane) serves, by its name; None for any other
    consumer."""
    if name.startswith(WORKER_CONSUMER_PREFIX):
        return name[len(WORKER_CONSUMER_PREFIX) :] or None
    if (lane := _LANE_CONSUMER.fullmatch(name)) is not None:
        return lane.group(2)
    return None


def definitions() -> Traversable:
    """The folder of the JetStream JSON, as the installed package holds it (a plain folder in
    a checkout or a wheel install; whatever the importer provides otherwise)."""
    return files(DEFINITIONS_PACKAGE) / DEFINITIONS_FOLDER


def load_stream_definitions(root: Traversable | None = None) -> list[dict[str, Any]]:
    """Every stream definition (``streams/*.json``), sorted by name."""
    streams = (root or definitions()) / "streams"
    found = sorted(
        (p for p in streams.iterdir() if p.name.endswith(".json")) if streams.is_dir() else (),
        key=lambda p: p.name,
    )
    if not found:  # a package built without its data: refuse rather than run stream-less
        raise ConfigurationError(f"no JetStream stream definitions in {streams}")
    return [_load(p) for p in found]


def load_consumer_definition(
    stream: str, name: str, root: Traversable | None = None
) -> dict[str, Any]:
    """One consumer definition (``consumers/<stream>/<name>.json``)."""
    return _load((root or definitions()) / "consumers" / stream / f"{name}.json")


def worker_consumer_config(
    queue: str, settings: Settings, priority: int = DEFAULT_PRIORITY
) -> dict[str, Any]:
    """The dispatch consumer of ``queue``'s lane ``priority``, with the lease settings
    applied (every lane has the same, so a job's lease does not depend on its priority)."""
    config = copy.deepcopy(load_consumer_definition(EVENT_STREAM, worker_consumer_name("default")))
    config["durable_name"] = worker_consumer_name(queue, priority)
    config["filter_subjects"] = runnable_filters(queue, priority)
    ack_wait = int(settings.policy(queue).ack_wait * _NANOS)
    config["ack_wait"] = ack_wait
    config["max_deliver"] = settings.max_deliver
    # A message whose workers keep dying waits longer each time (AckWait, 2x, 4x, ... after
    # each delivery) before JetStream gives up at MaxDeliver. The server takes BackOff[0] as
    # the AckWait, and the last entry for every later delivery.
    config["backoff"] = [ack_wait << n for n in range(min(settings.max_deliver, _BACKOFF_STEPS))]
    return config


async def ensure_streams(log: LogPort, settings: Settings, root: Traversable | None = None) -> None:
    """Create every stream, or update it where its definition changed.

    ``FQ_STREAM_REPLICAS`` overrides the files' replica count: 1 on the embedded server,
    3 on the production cluster (docker-compose.yml). Left unset, an existing stream keeps
    the replica count it has (only new streams get the default of 1).
    """
    replicas_chosen = "stream_replicas" in settings.model_fields_set
    for definition in load_stream_definitions(root):
        config = {**definition, "num_replicas": settings.stream_replicas}
        if not replicas_chosen:
            # A process started without FQ_STREAM_REPLICAS (a one-off `fq` command, say)
            # must not scale a production R3 stream down to the default R1.
            del config["num_replicas"]
        await log.ensure_stream(config)


async def ensure_topology(log: LogPort, settings: Settings) -> None:
    """What ``fq init`` does: streams, the scheduler's consumers, and the dispatch consumers
    of every lane of every configured queue. (The projector's consumers are its own: it
    re-creates them at its read store's position.)"""
    await ensure_streams(log, settings)
    for stream, config in service_consumer_definitions():
        await log.ensure_consumer(stream, config)
    for queue in settings.worker_queues:
        for lane in LANES:
            await log.ensure_consumer(EVENT_STREAM, worker_consumer_config(queue, settings, lane))


def service_consumer_definitions(
    root: Traversable | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Every fixed consumer definition (``consumers/<stream>/<name>.json``) but the worker
    template and the projector's, as (stream, config)."""
    folder = (root or definitions()) / "consumers"
    found: list[tuple[str, dict[str, Any]]] = []
    for stream in sorted(folder.iterdir(), key=lambda p: p.name) if folder.is_dir() else ():
        for path in sorted(stream.iterdir(), key=lambda p: p.name):
            name = path.name.removesuffix(".json")
            own = name.startswith((WORKER_CONSUMER_PREFIX, PROJECTOR_CONSUMER))
            if path.name.endswith(".json") and not own:
                found.append((stream.name, _load(path)))
    return found


async def prepare_streams(log: LogPort, settings: Settings, uses: Iterable[str]) -> None:
    """At a service's start: create or update every stream when the log may
    (:attr:`~ferrisqueue.log.port.LogPort.creates_topology`), else check that the streams the
    service ``uses`` exist."""
    if log.creates_topology:
        await ensure_streams(log, settings)
        return
    for name in uses:
        if not await log.has_stream(name):
            raise ConfigurationError(
                f"stream {name} does not exist; run `fq init` (with the admin NATS user) first"
            )


LEASE_FIELDS = ("ack_wait", "max_deliver", "backoff")
"""What a consumer must agree on with the process that pulls from it: a worker keeps its
leases alive by its own AckWait, so a consumer made with a shorter one would redeliver jobs
that are still running."""


async def prepare_consumer(log: LogPort, stream: str, config: dict[str, Any]) -> None:
    """At a consumer's start: create or update it when the log may, else check that it
    exists with the lease settings this process expects (its definition is ``fq init``'s
    business then)."""
    if log.creates_topology:
        await log.ensure_consumer(stream, config)
        return
    name = config["durable_name"]
    found = await log.consumer_definition(stream, name)
    if found is None:
        raise ConfigurationError(
            f"consumer {name} on {stream} does not exist; run `fq init` "
            "(with the admin NATS user, and FQ_WORKER_QUEUES naming every queue) first"
        )
    wanted = [k for k in LEASE_FIELDS if k in config]
    differ = {k: (found.get(k), config[k]) for k in wanted if found.get(k) != config[k]}
    if differ:
        raise ConfigurationError(
            f"consumer {name} on {stream} has {differ} (as made, as wanted here); run `fq init` "
            "with this process's FQ_QUEUES / FQ_ACK_WAIT / FQ_MAX_DELIVER"
        )


def _load(path: Traversable) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigurationError(f"JetStream definition {path} is missing")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
