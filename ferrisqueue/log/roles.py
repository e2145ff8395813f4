"""The NATS users of FerrisQueue: one per role, each with the least privilege it needs.

This module is the one place the roles are written down (pure data, no I/O). It is used by
``fq up`` (its embedded server's ``authorization`` block), by the denial tests, and rendered
into ``docs/security.md`` and the cluster configs (``nats/server/cluster/*.conf``,
``deploy/k8s/base/nats.conf``), whose blocks a test compares with :func:`render_authorization`.

Each permission below is what the service does on the wire, read from its code:

* a **publish** on a data subject (``fq.job.<queue>.<id>.<event>``, ``fq.dlq.…``, ``$KV.…``) is
  an append to a stream;
* a **read** of a stream is ``$JS.API.STREAM.INFO`` plus a message get (direct or through the
  stream leader), never a consumer;
* a **pull** is ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` plus acks, which JetStream
  addresses ``$JS.ACK.<stream>.<consumer>.…`` (or, in the v2 form, with a domain and an
  account hash first), so a role can ack only its own consumer's messages;
* every reply comes to the role's own inbox prefix (``_INBOX_<user>``), the only inbox it may
  subscribe to, so no role reads another's replies.

Only ``admin`` (``fq init``, ``fq keys``, the CLI) creates or changes streams and consumers.
One exception, on purpose: the projector re-creates *its own* two consumers to start them at
the read store's position (the store, not JetStream, holds how far it got), so it may create
and delete those two names and nothing else.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ferrisqueue.domain.partition import Partition
from ferrisqueue.domain.subjects import LANES, OTHER_LANES, lane_notices, runnable_token
from ferrisqueue.log.topology import worker_consumer_name

EVENTS = "FQ_EVENTS"
DLQ = "FQ_DLQ"
SCHEDULES = "FQ_SCHEDULES"
ADVISORIES = "FQ_ADVISORIES"
WORKERS = "FQ_WORKERS"
CONTROLS = "FQ_CONTROLS"
KV_IDEMPOTENCY = "KV_FQ_IDEMPOTENCY"
KV_CRON = "KV_FQ_CRON"
KV_KEYS = "KV_FQ_KEYS"
KV_RATELIMITS = "KV_FQ_RATELIMITS"

PRODUCER_EVENTS = ("submitted", "scheduled", "awaiting")
"""The events a plain-NATS producer writes: a job created to run now, later or after its
parents, nothing that changes a job once it exists."""

WORKER_EVENTS = (
    "started",
    "progress",
    "succeeded",
    "failed",
    "dead_lettered",
    "canceled",
    "throttled",
    "settled",
)
"""The events a worker writes about the jobs it runs (never ``submitted``, ``released`` or
``redriven``: a worker cannot make work runnable)."""

ADMIN = "admin"
OPERATOR = "operator"
GATEWAY = "gateway"
PROJECTOR = "projector"
SCHEDULER = "scheduler"
PRODUCER = "producer"
WORKER_PREFIX = "worker-"


@dataclass(frozen=True)
class Role:
    """One NATS user: its name, what it is for, and what it may publish and subscribe to."""

    user: str
    summary: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    @property
    def inbox_prefix(self) -> str:
        """The role's own inbox prefix (nats-py ``connect(inbox_prefix=...)``, the ``nats``
        CLI's ``--inbox-prefix``)."""
        return inbox_prefix_for(self.user)

    @property
    def password_env(self) -> str:
        """The environment variable the server config reads this user's password from."""
        return "NATS_PASSWORD_" + re.sub(r"[^A-Za-z0-9]", "_", self.user).upper()


def inbox_prefix_for(user: str) -> str:
    """The inbox prefix of ``user``: ``_INBOX_<user>``."""
    return f"_INBOX_{user}"


def new_password() -> str:
    """A fresh password: letters and digits, starting with a letter. nats-server parses the
    value of a ``$VAR`` reference as a config token, so one starting with a digit (a number)
    or holding punctuation may be misread; this form never is."""
    return "fq" + secrets.token_hex(24)


PASSWORD_FORM = re.compile(r"^[A-Za-z][A-Za-z0-9]{15,}$")
"""What a NATS password in a ``$VAR`` must look like (see :func:`new_password`)."""


def worker_user(queue: str) -> str:
    """The NATS user of the workers of ``queue``."""
    return f"{WORKER_PREFIX}{queue}"


# --- building blocks ------------------------------------------------------------------------


def _reads(*streams: str) -> tuple[str, ...]:
    """Stream info and single-message gets (direct or through the leader)."""
    out: list[str] = []
    for s in streams:
        out += [
            f"$JS.API.STREAM.INFO.{s}",
            f"$JS.API.STREAM.MSG.GET.{s}",
            f"$JS.API.DIRECT.GET.{s}",
            f"$JS.API.DIRECT.GET.{s}.>",
        ]
    return tuple(out)


def _purges(*streams: str) -> tuple[str, ...]:
    return tuple(f"$JS.API.STREAM.PURGE.{s}" for s in streams)


def _pulls(stream: str, consumer: str) -> tuple[str, ...]:
    """Pull from one durable consumer, look it up, and ack its messages (both ack forms)."""
    return (
        f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.ACK.{stream}.{consumer}.>",
        f"$JS.ACK.*.*.{stream}.{consumer}.>",
    )


def _owns(stream: str, consumer: str) -> tuple[str, ...]:
    """Create (both API forms) and delete one named consumer."""
    return (
        f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}",
        f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
        f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}",
    )


def _lists_consumers(stream: str) -> tuple[str, ...]:
    return (
        f"$JS.API.CONSUMER.NAMES.{stream}",
        f"$JS.API.CONSUMER.LIST.{stream}",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
    )


def _own_inbox(user: str) -> tuple[str, ...]:
    return (f"{inbox_prefix_for(user)}.>",)


# --- the roles ------------------------------------------------------------------------------


def gateway_role() -> Role:
    """The HTTP API: writes the events callers ask for on any queue (job events, and queue
    pauses and resumes), the idempotency and
    cron buckets and the cron server schedules; reads jobs, dead letters and keys; purges
    a dead letter (redrive, purge) or a job's timer (cancel)."""
    return Role(
        GATEWAY,
        "HTTP API: submits/cancels/redrives on every queue, edits schedules, reads keys",
        publish=(
            "fq.job.>",
            "fq.cron.>",
            "fq.queue.>",
            f"$KV.{KV_IDEMPOTENCY[3:]}.>",
            f"$KV.{KV_CRON[3:]}.>",
            f"$KV.{KV_RATELIMITS[3:]}.>",
            *_reads(EVENTS, DLQ, SCHEDULES, WORKERS, KV_IDEMPOTENCY, KV_CRON, KV_KEYS),
            *_reads(KV_RATELIMITS, CONTROLS),
            *_purges(DLQ, SCHEDULES),
            *_lists_consumers(EVENTS),
            # Watching the key bucket (revocations) with an ordered consumer of its own.
            f"$JS.API.CONSUMER.CREATE.{KV_KEYS}",
            f"$JS.API.CONSUMER.CREATE.{KV_KEYS}.>",
            f"$JS.API.CONSUMER.DELETE.{KV_KEYS}.>",
            f"$JS.FC.{KV_KEYS}.>",
        ),
        subscribe=(*_own_inbox(GATEWAY), f"$KV.{KV_KEYS[3:]}.>"),
    )


def worker_role(queue: str) -> Role:
    """The workers of one queue: pull that queue's dispatch consumer, write the outcome
    events of its jobs, park poison in that queue's dead letters, beat their heartbeat;
    read and watch the queue's pause state and limits (``fq.queue.<queue>.*`` in
    ``FQ_CONTROLS``) and take the queue's concurrency slots and start tokens
    (``q.<queue>.>`` in the ``FQ_RATELIMITS`` bucket)."""
    user = worker_user(queue)
    return Role(
        user,
        f"workers of queue {queue}: pull fq-worker-{queue} and its lanes, write its jobs' outcomes",
        publish=(
            *(f"fq.job.{queue}.*.{event}" for event in WORKER_EVENTS),
            f"fq.dlq.{queue}.*",
            "fq.worker.>",
            f"$KV.{KV_RATELIMITS[3:]}.q.{queue}.>",
            *_reads(EVENTS, CONTROLS, KV_RATELIMITS),
            *(p for lane in LANES for p in _pulls(EVENTS, worker_consumer_name(queue, lane))),
        ),
        subscribe=(
            *_own_inbox(user),
            f"fq.job.{queue}.*.cancel_requested",
            *lane_notices(queue),
            f"fq.queue.{queue}.*",
        ),
    )


def projector_role(consumer: str = "fq-projector", partitions: int = 1) -> Role:
    """The projector: reads the job and worker logs through its own two consumers, which it
    re-creates at the read store's position (a consumer of the job log per partition of the
    jobs projection, :mod:`ferrisqueue.domain.partition`). It publishes no data."""
    workers = f"{consumer}-workers"
    jobs = [partition.suffixed(consumer) for partition in Partition(0, partitions).siblings()]
    return Role(
        PROJECTOR,
        "read store projector: pulls its two consumers; publishes no data",
        publish=(
            *_reads(EVENTS, WORKERS),
            *(
                subject
                for name in jobs
                for subject in (*_pulls(EVENTS, name), *_owns(EVENTS, name))
            ),
            *_pulls(WORKERS, workers),
            *_owns(WORKERS, workers),
        ),
        subscribe=_own_inbox(PROJECTOR),
    )


def scheduler_role() -> Role:
    """The scheduler: timers and cron (server schedules), cron-submitted jobs on any queue,
    the dead-letter router and sweeper, queue depths."""
    return Role(
        SCHEDULER,
        "timers, cron, dead-letter routing and sweeping, queue depth",
        publish=(
            "fq.job.>",
            "fq.dlq.>",
            "fq.timer.>",
            "fq.cron.>",
            f"$KV.{KV_CRON[3:]}.>",
            *_reads(EVENTS, DLQ, SCHEDULES, ADVISORIES, KV_CRON),
            *_purges(DLQ, SCHEDULES),
            *_lists_consumers(EVENTS),
            *_pulls(EVENTS, "fq-scheduler-timers"),
            *_pulls(EVENTS, "fq-scheduler-deps"),
            *_pulls(EVENTS, "fq-dlq-sweeper"),
            *_pulls(SCHEDULES, "fq-scheduler-ticks"),
            *_pulls(ADVISORIES, "fq-dlq-router"),
        ),
        subscribe=_own_inbox(SCHEDULER),
    )


def producer_role() -> Role:
    """A plain-NATS producer (``nats req``, your own JetStream client): creates jobs on any
    queue and sees JetStream's ack, which is a reply to its own inbox, so it needs no
    ``$JS.API`` subject at all. One role for every queue: a queue is a routing label, not a
    tenant (the gateway lets any ``jobs:write`` key submit to any queue too), and a
    per-queue producer would add a secret per queue for no boundary the rest enforces."""
    return Role(
        PRODUCER,
        "plain-NATS producer: creates jobs (submitted, scheduled, awaiting) on any queue; "
        "reads nothing",
        publish=(
            *(f"fq.job.*.*.{event}" for event in PRODUCER_EVENTS),
            *(f"fq.job.*.*.{runnable_token('submitted', lane)}" for lane in OTHER_LANES),
        ),
        subscribe=_own_inbox(PRODUCER),
    )


def admin_role() -> Role:
    """``fq init``, ``fq keys``, ``fq cron``, ``fq projections rebuild`` and the other CLI
    commands: the only role that creates or changes streams and consumers."""
    return Role(
        ADMIN,
        "fq init / fq keys / the fq CLI: the only role that changes streams and consumers",
        publish=(">",),
        subscribe=(*_own_inbox(ADMIN), "fq.>", "$KV.>"),
    )


def operator_role() -> Role:
    """Read-only inspection with the ``nats`` CLI: stream and consumer info, message gets."""
    return Role(
        OPERATOR,
        "read-only: stream and consumer info, message gets (the nats CLI); publishes nothing",
        publish=(
            "$JS.API.INFO",
            "$JS.API.STREAM.NAMES",
            "$JS.API.STREAM.LIST",
            "$JS.API.STREAM.INFO.*",
            "$JS.API.STREAM.MSG.GET.*",
            "$JS.API.DIRECT.GET.>",
            "$JS.API.CONSUMER.NAMES.*",
            "$JS.API.CONSUMER.LIST.*",
            "$JS.API.CONSUMER.INFO.*.*",
        ),
        subscribe=_own_inbox(OPERATOR),
    )


def roles(
    queues: Iterable[str],
    *,
    projector_consumer: str = "fq-projector",
    projector_partitions: int = 1,
) -> list[Role]:
    """Every role: the fixed ones, then a worker role per queue (sorted, without repeats)."""
    return [
        admin_role(),
        operator_role(),
        gateway_role(),
        projector_role(projector_consumer, projector_partitions),
        scheduler_role(),
        producer_role(),
        *(worker_role(q) for q in sorted(set(queues))),
    ]


# --- rendering ------------------------------------------------------------------------------


def _quoted(items: Sequence[str]) -> str:
    return ", ".join(f'"{item}"' for item in items)


def render_authorization(all_roles: Sequence[Role], *, indent: str = "") -> str:
    """The nats-server ``authorization { users = [...] }`` block. Passwords are environment
    references (``$NATS_PASSWORD_<USER>``), so no config file holds a secret, and the server
    refuses to start when one is not set."""
    queues = [r.user[len(WORKER_PREFIX) :] for r in all_roles if r.user.startswith(WORKER_PREFIX)]
    made_by = " ".join(f"--queue {q}" for q in queues)
    lines = [
        f"{indent}# FerrisQueue's NATS roles (ferrisqueue/log/roles.py): `fq nats-roles {made_by}`",
        f"{indent}# Do not edit: regenerate. Each user's password comes from the environment.",
        f"{indent}authorization {{",
        f"{indent}  users = [",
    ]
    for role in all_roles:
        lines += [
            f"{indent}    # {role.summary}",
            f'{indent}    {{ user: "{role.user}", password: ${role.password_env}, permissions: {{',
            f"{indent}        publish: {{ allow: [{_quoted(role.publish)}] }}",
            f"{indent}        subscribe: {{ allow: [{_quoted(role.subscribe)}] }}",
            f"{indent}    }} }}",
        ]
    lines += [f"{indent}  ]", f"{indent}}}"]
    return "\n".join(lines) + "\n"


def render_markdown_table(all_roles: Sequence[Role]) -> str:
    """The role table of ``docs/security.md``."""
    rows = [
        "| User | Inbox prefix | What it is for | May publish | May subscribe |",
        "|---|---|---|---|---|",
    ]
    for role in all_roles:
        pub = "<br>".join(f"`{s}`" for s in role.publish)
        sub = "<br>".join(f"`{s}`" for s in role.subscribe)
        rows.append(f"| `{role.user}` | `{role.inbox_prefix}` | {role.summary} | {pub} | {sub} |")
    return "\n".join(rows) + "\n"
