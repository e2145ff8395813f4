"""What every ``fq`` command group shares: loading the settings and calling the gateway."""

from __future__ import annotations

from typing import Any

import httpx
import typer

from ferrisqueue.settings import Settings


def load_settings() -> Settings:
    """The ``FQ_`` settings; invalid ones are a usage error, printed without a traceback."""
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError: print it plainly, no traceback
        raise typer.BadParameter(f"invalid FQ_ settings:\n{exc}") from exc


def gateway_call(
    method: str, settings: Settings, path: str, *, timeout: float = 10, **kwargs: Any
) -> Any:
    """One request to the gateway; its JSON answer, or exit 1 with the error printed."""
    try:
        response = httpx.request(method, f"{settings.gateway_url}{path}", timeout=timeout, **kwargs)
    except httpx.HTTPError as exc:
        typer.secho(
            f"cannot reach the gateway at {settings.gateway_url}: {exc}", fg="red", err=True
        )
        raise typer.Exit(1) from exc
    if response.status_code >= 400:
        typer.secho(f"{response.status_code}: {response.text}", fg="red", err=True)
        raise typer.Exit(1)
    return response.json()
