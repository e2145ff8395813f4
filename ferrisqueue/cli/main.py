"""``fq``: run the local system, submit jobs, follow and audit them, manage the topology and
the read store."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from typing import Annotated, Any

import typer

from ferrisqueue.cli.backups import app as backups_app
from ferrisqueue.cli.bootstrap import bootstrap_keys, import_bootstrap_keys
from ferrisqueue.cli.common import cli_actor, gateway_call, load_settings, run_async
from ferrisqueue.cli.cron import app as cron_app
from ferrisqueue.cli.dead_letters import app as dead_letters_app
from ferrisqueue.cli.keys import app as keys_app
from ferrisqueue.cli.queues import app as queues_app
from ferrisqueue.domain.audit import AuditEntry, audit_trail
from ferrisqueue.domain.events import JobSpec, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.jobbuilder import JobRefused, JobRequest, build_job, parse_request
from ferrisqueue.domain.states import JobStatus
from ferrisqueue.domain.subjects import DEFAULT_PRIORITY
from ferrisqueue.errors import FerrisQueueError
from ferrisqueue.jobtypes import load_job_types
from ferrisqueue.log.natsconn import connect_as
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.topology import ensure_topology
from ferrisqueue.logs import setup_logging
from ferrisqueue.settings import Settings
from ferrisqueue.store.db import init_schema, make_engine
from ferrisqueue.tracing import TRACEPARENT, TRACESTATE, SpanKind, trace_headers, tracing_from_env

app = typer.Typer(
    help="FerrisQueue: a job queue whose source of truth is NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def up() -> None:
    """Start everything locally: embedded NATS, projector, gateway, scheduler, workers,
    dashboard."""
    from ferrisqueue.cli import up as up_module

    settings = load_settings()
    setup_logging("fq-up", settings.log_level, settings.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per readiness probe
    try:
        code = up_module.run(settings)
    except FerrisQueueError as exc:
        typer.secho(f"fq up: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


@app.command()
def init() -> None:
    """Create or update the streams and consumers, and the read store's tables; import the
    keys of FQ_BOOTSTRAP_*_KEY (idempotent)."""
    settings = load_settings()
    imported: list[str] = []

    async def apply() -> None:
        nc = await connect_as(settings, name="fq-init")
        try:
            await ensure_topology(NatsLog(nc), settings)
            imported.extend(await import_bootstrap_keys(NatsLog(nc), settings))
        finally:
            await nc.close()

    try:
        # Checked before anything is applied: a placeholder key fails fast and says why.
        bootstrap_keys(settings)
    except FerrisQueueError as exc:
        typer.secho(f"fq init: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    _run(apply())
    for line in imported:
        typer.echo(line)
    typer.echo(
        f"topology applied on {settings.effective_nats_url} "
        f"(queues: {', '.join(settings.worker_queues)})"
    )
    # The services create missing tables themselves at start; doing it here too lets a
    # deployment (the Kubernetes fq-init Job) find a wrong schema version before any starts.
    engine = make_engine(settings.effective_database_url)
    try:
        init_schema(engine)
    except FerrisQueueError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    typer.echo(f"read-store schema ready at {engine.url.render_as_string(hide_password=True)}")


@app.command()
def submit(
    type: Annotated[str, typer.Argument(help="Job type, e.g. echo")],
    payload: Annotated[str, typer.Option("--payload", "-p", help="JSON object")] = "{}",
    queue: Annotated[str, typer.Option("--queue", "-q")] = "default",
    delay: Annotated[
        float | None, typer.Option("--delay", min=0, help="Run it SECONDS from now")
    ] = None,
    run_at: Annotated[
        str | None,
        typer.Option("--run-at", help="Run it at this ISO 8601 time, e.g. 2030-01-01T09:00Z"),
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option("--max-attempts", min=1, help="Attempts before dead-lettering")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0.001, help="Seconds one attempt may run")
    ] = None,
    priority: Annotated[
        int, typer.Option("--priority", min=0, max=9, help="0-9, higher runs first")
    ] = DEFAULT_PRIORITY,
    after: Annotated[
        list[str] | None,
        typer.Option(
            "--after",
            metavar="ID",
            help="Run it once job ID has succeeded (repeat for several parents)",
        ),
    ] = None,
    concurrency_key: Annotated[
        str | None,
        typer.Option("--concurrency-key", help="Share the queue's per-key limits with this key"),
    ] = None,
    via_nats: Annotated[
        bool, typer.Option("--nats", help="Publish to JetStream directly, not through the gateway")
    ] = False,
) -> None:
    """Submit a job (now, after --delay, at --run-at, or once its --after parents succeeded);
    prints its id."""
    settings = load_settings()
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise typer.BadParameter(f"--payload is not JSON: {exc}") from exc
    fields = {
        "type": type,
        "payload": body,
        "queue": queue,
        "delay": delay,
        "run_at": run_at,
        "max_attempts": max_attempts,
        "timeout": timeout,
        "priority": priority,
        "depends_on": after or [],
        "concurrency_key": concurrency_key,
    }
    try:
        if via_nats:
            # Nothing checks the job between here and the log: the builder checks it against
            # the contracts installed here, as the gateway does against its own.
            event = build_job(
                fields,
                load_job_types(),
                job_id=new_job_id(),
                now=utcnow(),
                actor=cli_actor(),
            )
        else:
            # The gateway builds the job with its contracts (its plugins decide what it
            # accepts); the request's shape and start time are checked here first.
            request = parse_request(fields)
    except JobRefused as exc:
        raise typer.BadParameter(str(exc)) from exc
    tracing = tracing_from_env("fq-cli")
    try:
        # The submit span continues a trace named by $TRACEPARENT (and $TRACESTATE), if set;
        # its context goes on the event, or to the gateway as the request's traceparent.
        with tracing.span(
            f"fq submit {type}",
            kind=SpanKind.PRODUCER,
            parent=_environment_trace(),
            attributes={"fq.queue": queue, "fq.job_type": type},
        ) as span:
            job_id = _submit(settings, event if via_nats else request, span.headers)
    finally:
        tracing.shutdown()
    typer.echo(job_id)


def _environment_trace() -> dict[str, str]:
    """The trace context a calling process hands over in ``TRACEPARENT`` / ``TRACESTATE``."""
    carried = {TRACEPARENT: os.environ.get("TRACEPARENT", "")}
    return trace_headers({**carried, TRACESTATE: os.environ.get("TRACESTATE", "")})


def _submit(settings: Settings, job: JobSpec | JobRequest, trace: dict[str, str]) -> str:
    """Append ``job`` (an event) to the log, or send it (a request) to the gateway; its id."""
    if isinstance(job, JobRequest):
        body = job.model_dump(mode="json", exclude_none=True)
        answer = gateway_call("POST", settings, "/jobs", json=body, headers=trace)
        return str(answer["job_id"])

    async def publish() -> None:
        nc = await connect_as(settings, name="fq-submit")
        try:
            await NatsLog.for_settings(nc, settings).append(job, headers=trace)
        finally:
            await nc.close()

    _run(publish())
    return job.job_id


@app.command()
def status(
    job_id: str,
    wait: Annotated[float, typer.Option(help="Seconds to wait for a final status")] = 0.0,
) -> None:
    """Print a job's status as JSON (optionally waiting until it is final)."""
    settings = load_settings()
    deadline = time.monotonic() + wait
    while True:
        answer = gateway_call("GET", settings, f"/jobs/{job_id}/status")
        if JobStatus(answer["status"]).is_terminal or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    typer.echo(json.dumps(answer, indent=2))


app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(cron_app, name="cron")
app.add_typer(queues_app, name="queue")
app.add_typer(backups_app, name="log")
app.add_typer(keys_app, name="keys")

projections_app = typer.Typer(help="Read-store projections.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")

DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Read store to write (default FQ_DATABASE_URL)")
]


@projections_app.command("rebuild")
def rebuild(database_url: DatabaseUrl = None) -> None:
    """Fold the whole event log into the read store (use a fresh database), then exit."""
    _projections("rebuild", database_url)


@projections_app.command("verify")
def verify(database_url: DatabaseUrl = None) -> None:
    """Compare the read store with a fresh fold of the event log; exit 1 if they differ."""
    _projections("verify", database_url)


@app.command()
def replay(
    until: Annotated[str, typer.Option(help="RFC 3339 time, e.g. 2026-01-01T12:00:00Z")],
    database_url: DatabaseUrl = None,
) -> None:
    """Build the read store as it was at UNTIL (use a fresh database), then exit."""
    _projections("replay", database_url, "--until", until)


def _projections(command: str, database_url: str | None, *extra: str) -> None:
    # The projector is a service; the kernel's CLI runs it rather than importing it.
    argv = [sys.executable, "-m", "projections"]
    if database_url:
        argv += ["--database-url", database_url]
    raise typer.Exit(subprocess.run([*argv, command, *extra], check=False).returncode)


@app.command()
def audit(
    job_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """Print a job's complete history, read from the event log itself."""
    settings = load_settings()
    trail: list[AuditEntry] = []

    async def read() -> None:
        nc = await connect_as(settings, name="fq-audit")
        try:
            history = await NatsLog.for_settings(nc, settings).history(job_id)
            trail.extend(audit_trail(history))
        finally:
            await nc.close()

    _run(read())
    if not trail:
        typer.secho(f"no events for job {job_id}", fg="red", err=True)
        raise typer.Exit(1)
    # The actor column is as wide as its longest actor: worker ids and key names vary.
    width = max(len(entry.actor or "-") for entry in trail)
    for entry in trail:
        if as_json:
            typer.echo(json.dumps(dataclasses.asdict(entry), default=str))
            continue
        verdict = "" if entry.applied else f"  REJECTED: {entry.note}"
        if entry.event == "throttled" and entry.body:  # why the job waited
            verdict = f"  ({entry.body['reason']}: {entry.body['detail']}){verdict}"
        typer.echo(
            f"{entry.seq:>8}  {entry.at.isoformat(timespec='milliseconds')}  "
            f"{entry.event:<16} {entry.actor or '-':<{width}} -> "
            f"{entry.status_after or '-'}{verdict}"
        )


@app.command("nats-roles")
def nats_roles(
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", help="A queue with workers (repeat); default: default"),
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="The table of docs/security.md")
    ] = False,
    projector_partitions: Annotated[
        int,
        typer.Option(
            "--projector-partitions", min=1, help="FQ_PROJECTOR_PARTITIONS of the projectors"
        ),
    ] = 1,
) -> None:
    """Print the nats-server `authorization` block of FerrisQueue's NATS roles (passwords are
    $NATS_PASSWORD_<USER> references), for a server you run yourself."""
    from ferrisqueue.log.roles import render_authorization, render_markdown_table, roles

    chosen = roles(queue or ["default"], projector_partitions=projector_partitions)
    typer.echo(
        render_markdown_table(chosen) if markdown else render_authorization(chosen), nl=False
    )


@app.command("id")
def new_id() -> None:
    """Print a fresh job id (for publishing with the plain `nats` CLI)."""
    typer.echo(new_job_id())


def _run(coroutine: Any) -> None:
    run_async(coroutine)


def main() -> None:
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    app()
