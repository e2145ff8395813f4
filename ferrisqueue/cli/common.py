"""What every ``fq`` command group shares: loading the settings and calling the gateway."""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import typer

from ferrisqueue.cli.nats_users import with_admin_identity
from ferrisqueue.errors import FerrisQueueError
from ferrisqueue.settings import Settings

T = TypeVar("T")


def cli_actor() -> str:
    """``cli:$USER@$HOSTNAME``: the actor of what ``fq`` writes straight to NATS (through the
    gateway, the gateway's authenticated caller is the actor instead)."""
    user = os.environ.get("USER") or getpass.getuser()
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    return f"cli:{user}@{host}"


def load_settings() -> Settings:
    """The ``FQ_`` settings; invalid ones are a usage error, printed without a traceback.
    Against ``fq up``'s embedded server the CLI acts as its ``admin`` NATS user."""
    try:
        return with_admin_identity(Settings())
    except Exception as exc:  # pydantic's ValidationError: print it plainly, no traceback
        raise typer.BadParameter(f"invalid FQ_ settings:\n{exc}") from exc


def gateway_call(
    method: str, settings: Settings, path: str, *, timeout: float = 10, **kwargs: Any
) -> Any:
    """One request to the gateway; its JSON answer, or exit 1 with the error printed."""
    try:
        response = httpx.request(
            method,
            f"{settings.gateway_url}{path}",
            timeout=timeout,
            # FQ_API_KEY, else var/admin.key; a caller's own headers (traceparent) added.
            headers={**settings.client_auth_headers(), **kwargs.pop("headers", {})},
            **kwargs,
        )
    except httpx.HTTPError as exc:
        typer.secho(
            f"cannot reach the gateway at {settings.gateway_url}: {exc}", fg="red", err=True
        )
        raise typer.Exit(1) from exc
    if response.status_code >= 400:
        typer.secho(f"{response.status_code}: {response.text}", fg="red", err=True)
        raise typer.Exit(1)
    return response.json()


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; FerrisQueue's own errors exit 1 with the message only."""
    try:
        return asyncio.run(coroutine)
    except FerrisQueueError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from exc
