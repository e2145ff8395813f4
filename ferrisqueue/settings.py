"""Settings: environment variables with the ``FQ_`` prefix (or a ``.env`` file), validated at start.

Nothing reads the environment at import time: each service builds a :class:`Settings` in its
entry point and passes it down.
"""

from __future__ import annotations

import os
import re
import socket
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ferrisqueue.domain.backoff import RetryPolicy
from ferrisqueue.domain.ids import is_token
from ferrisqueue.domain.partition import Partition
from ferrisqueue.domain.policy import QueueOverrides, QueuePolicy
from ferrisqueue.domain.restarts import RestartPolicy
from ferrisqueue.logs import LogFormat

DEFAULT_EMBEDDED_NATS_PORT = 4322
"""Not 4222: a machine may already run another (older) nats-server there."""


class AuthMode(StrEnum):
    """Whether the gateway checks API keys."""

    ON = "on"
    OFF = "off"


PLACEHOLDER = "CHANGE-ME"
"""What the deployments' example secret files hold where a secret must go; refused."""

ADMIN_KEY_FILE = "admin.key"
"""The admin key `fq up` generates, under ``var_dir`` (a fixed path: scripts read it)."""

DASHBOARD_KEY_FILE = "dashboard.key"
"""The dashboard's read-scoped key `fq up` generates, under ``var_dir``."""


PLACEHOLDER_SECRET = "CHANGE-ME"
"""What the committed ``*.env.example`` files hold where a secret goes."""


def check_nats_password(password: str, where: str) -> None:
    """Refuse an empty password or the examples' placeholder: a secret left unset must not
    pass for one."""
    if not password.strip():
        raise ValueError(f"{where} is empty: refusing to connect with no secret")
    if PLACEHOLDER_SECRET.lower() in password.lower():
        raise ValueError(f"{where} is still the {PLACEHOLDER_SECRET} placeholder: choose one")


def _token(value: str) -> str:
    """``value`` made into a subject token (host names may hold dots)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", value)[-64:]


class Settings(BaseSettings):
    """Every knob of every FerrisQueue service."""

    model_config = SettingsConfigDict(env_prefix="FQ_", env_file=".env", extra="ignore")

    log_level: str = Field(default="INFO", pattern="(?i)^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: LogFormat = Field(
        default=LogFormat.TEXT,
        description="text: one line per record; json: one JSON object per line, with the "
        "job_id, queue, attempt, worker_id and trace_id of the work at hand.",
    )

    # --- NATS -----------------------------------------------------------------------------
    nats_url: str | None = Field(
        default=None,
        description="NATS server(s), comma separated. Unset: `fq up` starts an embedded one.",
    )
    nats_port: int = Field(
        default=DEFAULT_EMBEDDED_NATS_PORT,
        ge=1,
        le=65535,
        description="Client port of the embedded nats-server.",
    )
    nats_sync_always: bool = Field(
        default=False,
        description="Embedded server fsyncs before every ack (durable on power loss, ~5x slower).",
    )
    nats_connect_timeout: float = Field(default=2.0, gt=0)
    # NATS identity (docs/security.md, "NATS roles"). Unset: connect anonymously, as the
    # tests' and a bare `fq init`'s servers without users allow; `fq up` sets them per child.
    nats_user: str | None = Field(default=None, description="NATS user name (a role).")
    nats_password: SecretStr | None = Field(default=None, description="Its password.")
    nats_password_file: Path | None = Field(
        default=None, description="A file holding the password (a mounted secret) instead."
    )
    nats_creds: Path | None = Field(
        default=None, description="A NATS .creds file (JWT + nkey seed) instead of user/password."
    )
    nats_inbox_prefix: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="Where replies come. Unset: _INBOX_<user> (the role's), else _INBOX.",
    )
    nats_tls_ca: Path | None = Field(
        default=None, description="CA bundle to verify the server with; set to use TLS."
    )
    nats_tls_cert: Path | None = Field(default=None, description="Client certificate (mTLS).")
    nats_tls_key: Path | None = Field(default=None, description="Its private key.")
    stream_replicas: int = Field(
        default=1, ge=1, le=5, description="Replicas of every stream (3 on a 3-node cluster)."
    )
    max_event_bytes: int = Field(
        default=512 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest event (a job's payload, a result) accepted; the stream's own limit "
        "is 1 MiB. Larger submissions get 413.",
    )
    publish_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for JetStream to ack a publish."
    )

    # --- Read store -----------------------------------------------------------------------
    var_dir: Path = Field(
        default=Path("var"), description="Local state: embedded NATS data, SQLite file, logs."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the read store. Unset: SQLite in var_dir."
    )

    # --- Gateway --------------------------------------------------------------------------
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8000, ge=1, le=65535)
    gateway_url: str | None = Field(
        default=None, description="Where the CLI and dashboard reach the gateway."
    )
    retry_after_seconds: int = Field(
        default=2, ge=1, description="Retry-After sent with a 503 while NATS is away."
    )
    gateway_access_log: bool = Field(
        default=False, description="Log every HTTP request (uvicorn's access log)."
    )
    # Hostile input (docs/security.md, "Hostile input"): what one client can make the
    # gateway hold. uvicorn has no body limit and no body-read timeout of its own.
    gateway_max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest request body; a larger one is refused with 413 before it is "
        "read in full (a batch of 1000 jobs of a few KiB each fits the default).",
    )
    gateway_body_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a client may take to send a request's whole body; a slower one "
        "gets 408 and its connection is closed (slow-body attacks hold no worker for long).",
    )
    gateway_max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request line plus headers; larger ones get 431 and the "
        "connection is closed.",
    )
    gateway_header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a connection may take to send a request's line and headers "
        "(counted from connecting, or from a kept-alive request's first byte); a slower one "
        "gets 408 and is closed (slowloris).",
    )
    gateway_keep_alive_timeout: int = Field(
        default=5,
        gt=0,
        le=3600,
        description="Seconds an idle keep-alive connection stays open (uvicorn's "
        "timeout_keep_alive).",
    )
    gateway_limit_concurrency: int = Field(
        default=1000,
        ge=0,
        description="Connections plus requests in flight before new requests get 503 "
        "(uvicorn's limit_concurrency; 0: no limit).",
    )
    gateway_max_inflight: int = Field(
        default=64,
        ge=0,
        le=100_000,
        description="Submissions (POST /jobs, POST /jobs:batch) in flight at once in one "
        "gateway process; one more is refused at once with 503 and Retry-After instead of "
        "queueing behind them (admission control; 0: no limit).",
    )
    gateway_max_queue_wait: float = Field(
        default=0,
        ge=0,
        le=60,
        description="Seconds a submission may wait, once its request head was read, for the "
        "gateway's event loop to start it; a later one is refused at once with 503 and "
        "Retry-After, sparing the CPU its handling would cost (admission control: the process "
        "has less CPU than its load needs; 0, the default: no limit).",
    )

    # --- Authentication (gateway API keys) ------------------------------------------------
    auth: AuthMode = Field(
        default=AuthMode.ON,
        description="on: every gateway route but /healthz, /readyz and /metrics needs an API "
        "key (`Authorization: Bearer <key>`) holding the route's scope; off: no checks (tests "
        "and trusted local runs only; never expose such a gateway).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="The key the `fq` CLI and the dashboard send to the gateway. Unset: the "
        "one in var_dir/admin.key, if any.",
    )
    bootstrap_admin_key: SecretStr | None = Field(
        default=None,
        description="`fq init` stores this key (made with `fq keys generate`) as the key "
        "`admin`, holding every scope; a deployment's first key. Malformed or placeholder "
        "keys are refused; a different key replaces (revokes) the previous `admin`.",
    )
    bootstrap_admin_key_file: Path | None = Field(
        default=None, description="A file holding FQ_BOOTSTRAP_ADMIN_KEY (a mounted secret)."
    )
    bootstrap_dashboard_key: SecretStr | None = Field(
        default=None,
        description="`fq init` stores this key as the key `dashboard`, holding jobs:read and "
        "ops:read: give the same key to the dashboard as FQ_DASHBOARD_API_KEY.",
    )
    bootstrap_dashboard_key_file: Path | None = Field(
        default=None, description="A file holding FQ_BOOTSTRAP_DASHBOARD_KEY."
    )
    dashboard_api_key: SecretStr | None = Field(
        default=None,
        description="The dashboard's own read-scoped key, sent on its gateway calls. Unset: "
        "the one `fq up` wrote to var_dir/dashboard.key, if any. Never the operator's key.",
    )
    auth_refresh_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A gateway re-reads every key this often, besides watching the key "
        "store (a change made while it was disconnected from NATS is seen by then).",
    )

    # --- Worker ---------------------------------------------------------------------------
    worker_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["default"], description="Queues a worker consumes (comma list)."
    )
    worker_concurrency: int = Field(
        default=16, ge=1, le=10_000, description="Jobs one worker process runs at once."
    )
    worker_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Added to a worker process's nice value at start, so that where the "
        "services share a machine (`fq up`, `make up`) nats-server, the projector and the "
        "gateway get the CPU first and the read store keeps up with the workers; 0 leaves it. "
        "Between containers it changes nothing (each has its own CPU share).",
    )
    worker_id: str = Field(
        default_factory=lambda: _token(f"{socket.gethostname()}-{os.getpid()}"),
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Name a worker records in `started` events and heartbeats.",
    )
    worker_heartbeat: float = Field(
        default=5.0, ge=0.2, le=300, description="Seconds between a worker's heartbeats."
    )
    ack_wait: float = Field(
        default=30.0, ge=1.0, description="Visibility timeout: a job's lease without heartbeats."
    )
    max_deliver: int = Field(
        default=5,
        ge=1,
        description="Deliveries before JetStream stops redelivering a job (MaxDeliver).",
    )
    max_attempts: int = Field(
        default=3, ge=1, le=1000, description="Attempts before a failing job is dead-lettered."
    )
    job_timeout: float | None = Field(
        default=None, gt=0, description="Seconds one attempt may run (unset: no limit)."
    )
    retry_base: float = Field(default=1.0, gt=0, description="Backoff after attempt 1 (s).")
    retry_cap: float = Field(default=300.0, gt=0, description="Longest backoff (s).")
    retry_jitter: float = Field(
        default=0.2, ge=0, le=1, description="Spread of each backoff, as a fraction of it."
    )
    queues: dict[str, QueueOverrides] = Field(
        default_factory=dict,
        description='Per-queue overrides as JSON, e.g. {"mail": {"ack_wait": 120, '
        '"max_attempts": 10, "retry": {"base": 5, "cap": 3600}}}.',
    )
    shutdown_grace: float = Field(
        default=10.0, ge=0.0, description="Seconds a stopping worker lets running jobs finish."
    )

    # --- Built-in job types -----------------------------------------------------------------
    storage_root: Path | None = Field(
        default=None,
        description="The only folder file-handling jobs (image, data_processing, cleanup, "
        "report) may read or write. Unset: var_dir/storage.",
    )
    smtp_host: str | None = Field(
        default=None,
        description="SMTP server for email jobs. Unset: write .eml files to "
        "var_dir/outbox instead of sending.",
    )
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = Field(default=False, description="Upgrade with STARTTLS.")
    smtp_tls: bool = Field(default=False, description="Connect with implicit TLS (port 465).")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = Field(
        default="FerrisQueue <ferrisqueue@localhost>",
        description="Sender of email jobs that name none.",
    )
    smtp_timeout: float = Field(default=30.0, gt=0)
    image_max_pixels: int = Field(
        default=50_000_000, ge=1, description="Larger images are refused (decompression bombs)."
    )

    # --- Projector ------------------------------------------------------------------------
    projector_consumer: str = Field(
        default="fq-projector",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Durable consumer of the projector; one per read store (a rebuild into "
        "another store needs another name).",
    )
    projector_batch: int = Field(
        default=500, ge=1, le=10_000, description="Events applied per read-store transaction."
    )
    projector_partitions: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Projectors the jobs projection is split across (each applies the jobs "
        "whose id hashes to its partition; every one reads the whole event log). Changing it "
        "on a store needs every projector stopped first.",
    )
    projector_partition: int = Field(
        default=0,
        ge=0,
        description="Which partition (0 to FQ_PROJECTOR_PARTITIONS - 1) this projector "
        "applies; partition 0 also runs the workers projection.",
    )

    # --- Cron (scheduler) -----------------------------------------------------------------
    cron_file: Path | None = Field(
        default=None,
        description="TOML file of [[schedule]] tables the scheduler applies at start; "
        "schedules it defined earlier that are no longer in it are deleted.",
    )
    cron_misfire_grace: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a cron tick may wait for a scheduler; older ticks create no job "
        "(a scheduler down for hours does not flood the queue).",
    )

    # --- Metrics (Prometheus) ---------------------------------------------------------------
    metrics_enabled: bool = Field(
        default=True,
        description="Collect Prometheus metrics. Off: the gateway's /metrics answers 404 and "
        "no service records anything (the baseline `make bench` compares against).",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Interface of the metrics port of a worker, projector or scheduler.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port where a worker, projector or scheduler serves GET /metrics and "
        "GET /healthz (unset: none). Under `fq up`, the first of a block of ports, one per "
        "child. The gateway serves /metrics on its own port.",
    )

    # --- Local system (`fq up`) -----------------------------------------------------------
    workers: int = Field(default=2, ge=0, le=64, description="Worker processes `fq up` starts.")
    dashboard_port: int = Field(default=8501, ge=1, le=65535)
    dashboard: bool = Field(default=True, description="Whether `fq up` starts the dashboard.")
    up_restart_base: float = Field(
        default=1.0, gt=0, le=3600, description="`fq up`: wait before restarting a child (s)."
    )
    up_restart_cap: float = Field(
        default=30.0, gt=0, le=3600, description="`fq up`: longest wait before a restart (s)."
    )
    up_restart_reset: float = Field(
        default=30.0,
        gt=0,
        description="`fq up`: a child up this long before it died restarts after the shortest "
        "wait again (s).",
    )
    up_crash_loop_exits: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="`fq up` stops everything when one child exits this often within "
        "FQ_UP_CRASH_LOOP_WINDOW (1: at its first exit).",
    )
    up_crash_loop_window: float = Field(
        default=60.0, gt=0, description="`fq up`: the crash-loop window (s)."
    )
    up_status_interval: float = Field(
        default=300.0,
        ge=0,
        description="`fq up` logs a one-line status of its children this often (s; 0: only "
        "when one exits or starts again).",
    )

    @field_validator("database_url")
    @classmethod
    def _database_password_is_not_a_placeholder(cls, value: str | None) -> str | None:
        """The deployments' example files say ``CHANGE-ME``: a copy left unedited must not
        start (docs/security.md, "Dashboard login and deployment secrets")."""
        if value is not None and (urlsplit(value).password or "").startswith(PLACEHOLDER):
            raise ValueError(f"the password in FQ_DATABASE_URL is the {PLACEHOLDER} placeholder")
        return value

    @field_validator("worker_queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        if isinstance(value, str):
            return [q.strip() for q in value.split(",") if q.strip()]
        return value

    @field_validator("worker_queues")
    @classmethod
    def _queues_are_tokens(cls, value: list[str]) -> list[str]:
        bad = [q for q in value if not is_token(q)]
        if bad or not value:
            raise ValueError(f"queue names must be [A-Za-z0-9_-]{{1,64}}; got {bad or 'none'}")
        return value

    @field_validator("queues")
    @classmethod
    def _queue_keys_are_tokens(cls, value: dict[str, QueueOverrides]) -> dict[str, QueueOverrides]:
        bad = [q for q in value if not is_token(q)]
        if bad:
            raise ValueError(f"queue names must be [A-Za-z0-9_-]{{1,64}}; got {bad}")
        return value

    def policy(self, queue: str) -> QueuePolicy:
        """The lease, attempts, timeout and backoff of ``queue``."""
        default = QueuePolicy(
            ack_wait=self.ack_wait,
            max_attempts=self.max_attempts,
            timeout=self.job_timeout,
            retry=RetryPolicy(base=self.retry_base, cap=self.retry_cap, jitter=self.retry_jitter),
        )
        overrides = self.queues.get(queue)
        return overrides.over(default) if overrides else default

    def restart_policy(self) -> RestartPolicy:
        """How `fq up` restarts a child that died, and what it calls a crash loop."""
        return RestartPolicy(
            base=self.up_restart_base,
            cap=self.up_restart_cap,
            reset_after=self.up_restart_reset,
            crash_loop_exits=self.up_crash_loop_exits,
            crash_loop_window=self.up_crash_loop_window,
        )

    @model_validator(mode="after")
    def _fill_derived(self) -> Settings:
        if self.gateway_url is None:
            self.gateway_url = f"http://{self.gateway_host}:{self.gateway_port}"
        return self

    @model_validator(mode="after")
    def _projector_partition_exists(self) -> Settings:
        if self.projector_partition >= self.projector_partitions:
            raise ValueError(
                f"FQ_PROJECTOR_PARTITION={self.projector_partition} is not one of the "
                f"{self.projector_partitions} partitions (0 to {self.projector_partitions - 1})"
            )
        return self

    @property
    def projector_share(self) -> Partition:
        """The jobs projection's partition this projector applies."""
        return Partition(self.projector_partition, self.projector_partitions)

    @model_validator(mode="after")
    def _restart_policy_is_sound(self) -> Settings:
        try:
            self.restart_policy()
        except ValidationError as exc:
            # Reported under the FQ_UP_ names a user sets, not the policy's own field names.
            reasons = "; ".join(str(e.get("ctx", {}).get("error", e["msg"])) for e in exc.errors())
            raise ValueError(f"FQ_UP_RESTART_* / FQ_UP_CRASH_LOOP_*: {reasons}") from exc
        return self

    @model_validator(mode="after")
    def _nats_identity_is_whole(self) -> Settings:
        password = self.nats_password is not None or self.nats_password_file is not None
        if self.nats_password is not None and self.nats_password_file is not None:
            raise ValueError("set FQ_NATS_PASSWORD or FQ_NATS_PASSWORD_FILE, not both")
        if self.nats_password is not None:
            check_nats_password(self.nats_password.get_secret_value(), "FQ_NATS_PASSWORD")
        if (self.nats_user is None) != (not password):
            raise ValueError("FQ_NATS_USER and a password (FQ_NATS_PASSWORD[_FILE]) go together")
        if self.nats_creds is not None and self.nats_user is not None:
            raise ValueError("set FQ_NATS_CREDS or FQ_NATS_USER, not both")
        if (self.nats_tls_cert is None) != (self.nats_tls_key is None):
            raise ValueError("FQ_NATS_TLS_CERT and FQ_NATS_TLS_KEY go together")
        return self

    @property
    def nats_authenticated(self) -> bool:
        """Whether this process connects to NATS as a user (a role) rather than anonymously.
        Such a process only verifies the topology; an anonymous one may still create it."""
        return self.nats_user is not None or self.nats_creds is not None

    @property
    def metrics_served(self) -> bool:
        """Whether a worker, projector or scheduler collects metrics and serves its port."""
        return self.metrics_enabled and self.metrics_port is not None

    @property
    def embedded_nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def effective_nats_url(self) -> str:
        """The server(s) services connect to: the configured one or the embedded one."""
        return self.nats_url or self.embedded_nats_url

    @property
    def admin_key_path(self) -> Path:
        """``var_dir/admin.key``: where `fq up` writes the admin key (mode 0600)."""
        return self.var_dir / ADMIN_KEY_FILE

    def client_api_key(self) -> str | None:
        """The key a client of the gateway sends: ``FQ_API_KEY``, else the admin key file's
        content when it exists and is readable, else None (no header)."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        return _read_secret_file(self.admin_key_path)

    @property
    def dashboard_key_path(self) -> Path:
        """``var_dir/dashboard.key``: where `fq up` writes the dashboard's key (mode 0600)."""
        return self.var_dir / DASHBOARD_KEY_FILE

    def dashboard_client_key(self) -> str | None:
        """The key the dashboard sends: ``FQ_DASHBOARD_API_KEY``, else the content of
        ``var_dir/dashboard.key`` when it is readable, else None. Never the admin key: the
        dashboard reads with its own read-only key."""
        if self.dashboard_api_key is not None:
            return self.dashboard_api_key.get_secret_value()
        return _read_secret_file(self.dashboard_key_path)

    def client_auth_headers(self) -> dict[str, str]:
        """``Authorization: Bearer <key>`` when a client key is known, else nothing."""
        key = self.client_api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def effective_storage_root(self) -> Path:
        return self.storage_root or self.var_dir / "storage"

    @property
    def outbox_dir(self) -> Path:
        """Where email jobs write .eml files when no SMTP server is configured."""
        return self.var_dir / "outbox"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'ferrisqueue.db'}"


def _read_secret_file(path: Path) -> str | None:
    """A key kept in a file: its stripped content, or None when it is missing, unreadable
    or empty."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
