"""Contract of the ``email`` job type: render a message from templates and send it.

The subject and bodies are Jinja2 templates rendered (in a sandbox, with strict undefined
variables) from ``variables``; the worker sends the message over SMTP, or writes it to the
outbox folder when no SMTP server is configured. See ``worker.tasks.email``.

Addresses are checked here, so the gateway answers 422 before anything is queued: one
address per entry (``user@example.com`` or ``Name <user@example.com>``), ASCII addr-spec
only (no SMTPUTF8), no line breaks (header injection).
"""

from __future__ import annotations

import re
from email.utils import getaddresses
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from ferrisqueue.jobtypes import JobType

MAX_RECIPIENTS = 100
"""Per list (to, cc, bcc): a job is one message, not a mailing."""

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDR_SPEC = re.compile(rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})*$")

SAFE_HEADERS = frozenset(
    h.lower()
    for h in (
        "In-Reply-To",
        "References",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "Auto-Submitted",
        "Precedence",
        "Importance",
        "Priority",
        "Keywords",
        "Comments",
    )
)
"""Extra headers a payload may set, besides any ``X-...`` header. Everything that decides
where the message goes or how it is parsed (From, To, Bcc, Sender, Message-ID, Content-*,
MIME-Version, Received, DKIM-Signature, ...) is the task's alone."""

_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,76}$")


def split_address(value: str) -> tuple[str, str]:
    """``(display name, addr-spec)`` of one address; :class:`ValueError` if it is not one."""
    if "\r" in value or "\n" in value:
        raise ValueError("an address may not contain line breaks")
    parsed = getaddresses([value])
    if len(parsed) != 1:
        raise ValueError(f"{value!r} must be exactly one address")
    name, addr = parsed[0]
    if len(addr) > 254 or not _ADDR_SPEC.match(addr):
        raise ValueError(f"{value!r} is not an email address")
    return name, addr


def _check_address(value: str) -> str:
    split_address(value)
    return value.strip()


EmailAddress = Annotated[
    str,
    Field(max_length=320, examples=["ada@example.com", "Ada Lovelace <ada@example.com>"]),
    AfterValidator(_check_address),
]


class EmailPayload(BaseModel):
    """What an ``email`` job sends."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: list[EmailAddress] = Field(
        min_length=1, max_length=MAX_RECIPIENTS, description="Recipients (To header)."
    )
    cc: list[EmailAddress] = Field(
        default_factory=list, max_length=MAX_RECIPIENTS, description="Copy recipients (Cc)."
    )
    bcc: list[EmailAddress] = Field(
        default_factory=list,
        max_length=MAX_RECIPIENTS,
        description="Blind copies: envelope recipients that no header names.",
    )
    from_: EmailAddress | None = Field(
        default=None,
        alias="from",
        description="Sender (From header and envelope). Unset: the worker's FQ_SMTP_FROM.",
    )
    reply_to: EmailAddress | None = Field(default=None, description="Reply-To header.")
    subject_template: str = Field(
        min_length=1,
        max_length=2_000,
        description="Jinja2 template of the subject; line breaks in the result become spaces.",
    )
    text_template: str = Field(
        max_length=200_000, description="Jinja2 template of the plain-text body (not escaped)."
    )
    html_template: str | None = Field(
        default=None,
        max_length=200_000,
        description="Jinja2 template of an HTML alternative (variables HTML-escaped).",
    )
    variables: dict[str, Any] = Field(
        default_factory=dict,
        description="Values the templates use; a variable a template names but this lacks "
        "fails the job.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=20,
        description="Extra headers: X-* or one of "
        + ", ".join(sorted(SAFE_HEADERS))
        + " (case-insensitive).",
    )

    @field_validator("headers")
    @classmethod
    def _safe_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} must be letters, digits and '-'")
            if not name.lower().startswith("x-") and name.lower() not in SAFE_HEADERS:
                raise ValueError(f"header {name!r} may not be set by a payload")
            if "\r" in text or "\n" in text or len(text) > 998:
                raise ValueError(f"header {name!r}: one line of at most 998 characters")
        return value


class EmailResult(BaseModel):
    """What an ``email`` job did."""

    model_config = ConfigDict(extra="forbid")

    message_id: str = Field(description="The Message-ID header: <job_id@ferrisqueue>.")
    recipients: int = Field(description="Envelope recipients the message was handed to.")
    delivered_via: Literal["smtp", "outbox"]
    outbox_path: str | None = Field(default=None, description="The .eml file, when written.")
    refused: dict[str, str] = Field(
        default_factory=dict,
        description="Recipients the SMTP server refused while accepting others: address -> "
        "server reply. (All refused fails the job instead.)",
    )


JOB_TYPE = JobType(
    name="email",
    description="Render a message from Jinja2 templates and send it over SMTP "
    "(or write it to the outbox folder when no SMTP server is configured).",
    payload=EmailPayload,
    result=EmailResult,
)
