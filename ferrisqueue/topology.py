"""Streams and consumers, created or updated idempotently from the JSON under ``nats/``.

The definitions are the JetStream API's own JSON, so the ``nats`` CLI applies the same files:
``nats stream add --config nats/jetstream/streams/FQ_EVENTS.json``. Code applies them through
the same API (``$JS.API.STREAM.CREATE`` / ``UPDATE`` and ``$JS.API.CONSUMER.CREATE``), so
there is one source of truth for the topology.

A worker's dispatch consumer is defined once, for the ``default`` queue; other queues get the
same definition with the queue name swapped in.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client

from ferrisqueue.errors import ConfigurationError, NatsUnavailable
from ferrisqueue.settings import Settings
from ferrisqueue.subjects import EVENT_STREAM, runnable_filters

_NANOS = 1_000_000_000
_STREAM_IN_USE = 10058  # "stream name already in use with a different configuration"
_BACKOFF_STEPS = 6  # redelivery waits double up to 32x AckWait
_UNANSWERED = frozenset({None, 10008})  # no answer; "JetStream system temporarily unavailable"

API_TIMEOUT = 5.0
"""Seconds one JetStream API request waits for its answer."""
API_PATIENCE = 30.0
"""Seconds a topology request is asked again while JetStream does not answer."""
API_RETRY_PAUSE = 1.0

log = logging.getLogger(__name__)

DEFINITIONS_DIR = Path(__file__).resolve().parent.parent / "nats" / "jetstream"
"""Where the JSON lives in a checkout (the project runs from one, see README)."""

PROJECTOR_CONSUMER = "fq-projector"


def worker_consumer_name(queue: str) -> str:
    return f"fq-worker-{queue}"


def load_stream_definitions(root: Path = DEFINITIONS_DIR) -> list[dict[str, Any]]:
    """Every stream definition, sorted by name."""
    return [_load(p) for p in sorted((root / "streams").glob("*.json"))]


def load_consumer_definition(
    stream: str, name: str, root: Path = DEFINITIONS_DIR
) -> dict[str, Any]:
    """One consumer definition (``nats/jetstream/consumers/<stream>/<name>.json``)."""
    return _load(root / "consumers" / stream / f"{name}.json")


def worker_consumer_config(queue: str, settings: Settings) -> dict[str, Any]:
    """The dispatch consumer of ``queue``, with the lease settings applied."""
    config = copy.deepcopy(load_consumer_definition(EVENT_STREAM, worker_consumer_name("default")))
    config["durable_name"] = worker_consumer_name(queue)
    config["filter_subjects"] = runnable_filters(queue)
    ack_wait = int(settings.policy(queue).ack_wait * _NANOS)
    config["ack_wait"] = ack_wait
    config["max_deliver"] = settings.max_deliver
    # A message whose workers keep dying waits longer each time (AckWait, 2x, 4x, ... after
    # each delivery) before JetStream gives up at MaxDeliver. The server takes BackOff[0] as
    # the AckWait, and the last entry for every later delivery.
    config["backoff"] = [ack_wait << n for n in range(min(settings.max_deliver, _BACKOFF_STEPS))]
    return config


async def ensure_streams(nc: Client, settings: Settings, root: Path = DEFINITIONS_DIR) -> None:
    """Create every stream, or update it where its definition changed.

    ``FQ_STREAM_REPLICAS`` overrides the files' replica count: 1 on the embedded server,
    3 on the production cluster (docker-compose.yml). Left unset, an existing stream keeps
    the replica count it has (only new streams get the default of 1).
    """
    replicas_chosen = "stream_replicas" in settings.model_fields_set
    for definition in load_stream_definitions(root):
        config = {**definition, "num_replicas": settings.stream_replicas}
        name = config["name"]
        reply = await _api(nc, f"$JS.API.STREAM.CREATE.{name}", config, allow=(_STREAM_IN_USE,))
        if reply.get("error"):
            if not replicas_chosen:
                # A process started without FQ_STREAM_REPLICAS (a one-off `fq` command, say)
                # must not scale a production R3 stream down to the default R1.
                info = await _api(nc, f"$JS.API.STREAM.INFO.{name}", None)
                config["num_replicas"] = info["config"].get("num_replicas", 1)
            await _api(nc, f"$JS.API.STREAM.UPDATE.{name}", config)


async def ensure_consumer(nc: Client, stream: str, config: dict[str, Any]) -> None:
    """Create the durable consumer or update it in place."""
    body = {"stream_name": stream, "config": config}
    await _api(nc, f"$JS.API.CONSUMER.CREATE.{stream}.{config['durable_name']}", body)


async def delete_consumer(nc: Client, stream: str, name: str) -> None:
    await _api(nc, f"$JS.API.CONSUMER.DELETE.{stream}.{name}", None, allow=(10014,))


async def ensure_topology(nc: Client, settings: Settings) -> None:
    """What ``fq init`` does: streams, and the dispatch consumer of every configured queue."""
    await ensure_streams(nc, settings)
    for queue in settings.worker_queues:
        await ensure_consumer(nc, EVENT_STREAM, worker_consumer_config(queue, settings))


async def _api(
    nc: Client, subject: str, body: dict[str, Any] | None, *, allow: tuple[int, ...] = ()
) -> dict[str, Any]:
    """One JetStream API request. Every request made here is idempotent (create or update
    to a definition, delete what may be gone), so one that gets no answer — a cluster
    electing its meta leader, a node lost under load — is sent again for up to
    :data:`API_PATIENCE` seconds before :class:`NatsUnavailable` is raised; a service
    starting beside a busy cluster waits for it instead of dying."""
    payload = json.dumps(body).encode() if body is not None else b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + API_PATIENCE
    while True:
        try:
            msg = await nc.request(subject, payload, timeout=API_TIMEOUT)
            reply: dict[str, Any] = json.loads(msg.data)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            reply = {"error": {"err_code": None, "description": f"no answer ({exc!r})"}}
        error = reply.get("error")
        if error is None or error.get("err_code") in allow:
            return reply
        why = f"{subject}: {error.get('description')} ({error.get('err_code')})"
        if error.get("err_code") not in _UNANSWERED:
            raise ConfigurationError(why)
        if loop.time() + API_TIMEOUT > deadline:
            raise NatsUnavailable(f"JetStream did not answer in {API_PATIENCE:g} s: {why}")
        log.warning("%s; asking again", why)
        await asyncio.sleep(API_RETRY_PAUSE)  # the cluster's own recovery, not a test's wait


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigurationError(f"JetStream definition {path} is missing")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
