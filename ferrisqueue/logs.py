"""Logging set-up shared by the services' entry points (never called at import), and the
context fields that records gain where they apply.

Two formats (``FQ_LOG_FORMAT``): ``text``, one line per record tagged with the service, and
``json``, one JSON object per line with ``time``, ``level``, ``service``, ``logger`` and
``message`` (``exception`` with the traceback when there is one), plus the fields bound
where the record was made: ``job_id``, ``queue``, ``attempt``, ``worker_id``, ``trace_id``.

Fields are bound with :func:`bind_log_fields` in a context variable, by the worker around an
attempt and by the gateway in a request that names a job, so the existing log calls gain
them without being rewritten: a filter on the handler copies them onto each record when it
is made (in the task, or the thread, that made it).

A JSON formatter of our own rather than python-json-logger: the record's shape is fixed and
small, and the dependency would save a dozen lines.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

LogFields = Mapping[str, str | int]

_FIELDS: ContextVar[LogFields] = ContextVar("fq_log_fields", default=MappingProxyType({}))
"""The fields of the work at hand (a job's attempt, a request about a job)."""

_ACCESS_LOGGER = "uvicorn.access"
_ACCESS_ARGS = ("client", "method", "path", "http_version", "status")
"""What uvicorn's access log passes as arguments, in order."""


class LogFormat(StrEnum):
    """How records are written (``FQ_LOG_FORMAT``)."""

    TEXT = "text"
    JSON = "json"


def bind_log_fields(**fields: str | int | None) -> Token[LogFields]:
    """Add ``fields`` (those not None) to every record made in this context from now on,
    until :func:`reset_log_fields` with the returned token (in the same task)."""
    bound = {name: value for name, value in fields.items() if value is not None}
    return _FIELDS.set({**_FIELDS.get(), **bound})


def reset_log_fields(token: Token[LogFields]) -> None:
    """Undo the :func:`bind_log_fields` that returned ``token``."""
    _FIELDS.reset(token)


class ContextFields(logging.Filter):
    """Copies the bound fields onto each record (as ``record.fq_fields``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.fq_fields = _FIELDS.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fq_fields", None) or {})
        if record.name == _ACCESS_LOGGER and isinstance(record.args, tuple):
            line.update(zip(_ACCESS_ARGS, record.args, strict=False))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def setup_logging(service: str, level: str, log_format: LogFormat = LogFormat.TEXT) -> None:
    """Log to stderr at ``level``: one line per record tagged with the service, or in the
    JSON format with the bound fields."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter(service))
        handler.addFilter(ContextFields())
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
        )
    logging.basicConfig(level=level.upper(), handlers=[handler])
