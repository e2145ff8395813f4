"""The ``email`` task: render a message from Jinja2 templates and send it.

Rendering runs in a :class:`~jinja2.sandbox.SandboxedEnvironment` (templates come from
payloads, so they are untrusted) with :class:`~jinja2.StrictUndefined`: a variable a
template names but ``variables`` lacks fails the job permanently, naming the variable,
instead of sending a message with a blank in it. The HTML body is autoescaped; the subject
and the text body are not (they are not HTML).

Delivery: over SMTP when ``FQ_SMTP_HOST`` is set (port, STARTTLS or implicit TLS, login and
timeout from the settings); otherwise the message is written to
``<var_dir>/outbox/<job_id>.eml`` (temp file + rename, so a reader never sees half a file).

Idempotency: a handler may run twice for one job (at-least-once delivery), and SMTP cannot
un-send. The message's ``Message-ID`` is derived from the job id (``<job_id@ferrisqueue>``),
so a second run sends a message with the *same* Message-ID: mail clients and archives that
deduplicate on it show it once, and downstream tools can recognise the repeat. The outbox
file of a re-run simply replaces the first one.

Errors: a 5xx answer (recipients, sender or login refused, message rejected) is
:class:`SmtpRefused`, a :class:`~ferrisqueue.errors.Permanent` error; a 4xx answer, a
refused connection or a timeout is :class:`SmtpUnavailable`, an ordinary (retryable) error.
When the server takes some recipients and refuses others, the message was sent: the job
succeeds and the result lists the refused ones (failing it would invite a retry that mails
the others again).
"""

from __future__ import annotations

import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from ferrisqueue.errors import Permanent
from ferrisqueue.jobtypes.email import EmailPayload, EmailResult, split_address
from ferrisqueue.settings import Settings
from worker.context import JobContext
from worker.registry import TaskRegistry
from worker.storage import atomic_writer

MAX_RENDERED_CHARS = 2_000_000
"""Per rendered part: a sandboxed template can still loop; this bounds what it may produce."""


class TemplateFailed(Permanent):
    """A template does not render with the job's variables (missing variable, bad syntax,
    an unsafe operation, an oversized result): the same payload would fail again."""


class SmtpRefused(Permanent):
    """The SMTP server refused for good (a 5xx reply)."""


class SmtpUnavailable(Exception):
    """No answer, or a temporary (4xx) one, from the SMTP server: worth retrying later."""


def message_id_for(job_id: str) -> str:
    """The Message-ID of a job's message: the same on every run of the job."""
    return f"<{job_id}@ferrisqueue>"


# --- Rendering -----------------------------------------------------------------------------


def _environment(*, html: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=html, keep_trailing_newline=True
    )


def render_template(source: str, variables: dict[str, Any], *, field: str, html: bool) -> str:
    """``source`` rendered with ``variables``; :class:`TemplateFailed` naming ``field`` if not."""
    try:
        template = _environment(html=html).from_string(source)
        parts: list[str] = []
        size = 0
        for chunk in template.generate(variables):
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise TemplateFailed(f"{field} renders to more than {MAX_RENDERED_CHARS} chars")
            parts.append(chunk)
    except TemplateFailed:
        raise
    except TemplateError as exc:  # UndefinedError says "'name' is undefined"
        raise TemplateFailed(f"{field}: {exc.message or type(exc).__name__}") from exc
    except Exception as exc:  # e.g. {{ 1 / 0 }}: deterministic, so permanent too
        raise TemplateFailed(f"{field}: {type(exc).__name__}: {exc}") from exc
    return "".join(parts)


def render(payload: EmailPayload) -> tuple[str, str, str | None]:
    """The rendered subject (on one line), text body and HTML body (or None)."""
    variables = payload.variables
    subject = render_template(
        payload.subject_template, variables, field="subject_template", html=False
    )
    text = render_template(payload.text_template, variables, field="text_template", html=False)
    html = None
    if payload.html_template is not None:
        html = render_template(payload.html_template, variables, field="html_template", html=True)
    # A header cannot span lines (a variable holding "\n" would otherwise be an injection).
    return " ".join(subject.split()), text, html


# --- Building ------------------------------------------------------------------------------


def _address(value: str) -> Address:
    name, addr = split_address(value)
    return Address(display_name=name, addr_spec=addr)


def build_message(
    payload: EmailPayload, *, job_id: str, default_from: str, bcc_header: bool = False
) -> tuple[EmailMessage, str, list[str]]:
    """The message, its envelope sender and its envelope recipients (To + Cc + Bcc, each
    address once). Bcc is in the envelope only, unless ``bcc_header`` (for the outbox)."""
    subject, text, html = render(payload)
    sender = _address(payload.from_ or default_from)
    message = EmailMessage()
    message["Message-ID"] = message_id_for(job_id)
    message["Date"] = formatdate(usegmt=True)
    message["From"] = sender
    message["To"] = [_address(a) for a in payload.to]
    if payload.cc:
        message["Cc"] = [_address(a) for a in payload.cc]
    if payload.bcc and bcc_header:
        message["Bcc"] = [_address(a) for a in payload.bcc]
    if payload.reply_to:
        message["Reply-To"] = _address(payload.reply_to)
    message["Subject"] = subject
    for name, value in payload.headers.items():
        message[name] = value
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")  # -> multipart/alternative
    recipients = list(
        dict.fromkeys(_address(a).addr_spec for a in [*payload.to, *payload.cc, *payload.bcc])
    )
    return message, sender.addr_spec, recipients


# --- Delivering ----------------------------------------------------------------------------


def write_outbox(message: EmailMessage, outbox: Path, job_id: str) -> Path:
    """Write ``<outbox>/<job_id>.eml`` atomically; a re-run replaces it."""
    target = outbox / f"{job_id}.eml"
    with atomic_writer(target, mode=0o600) as out:  # mail may be private: owner only
        out.write(message.as_bytes(policy=SMTP))
    return target


def send_smtp(
    message: EmailMessage, sender: str, recipients: list[str], settings: Settings
) -> dict[str, str]:
    """Send over SMTP as the settings say; returns the refused recipients (address -> reply)."""
    host = settings.smtp_host
    assert host is not None
    where = f"{host}:{settings.smtp_port}"
    try:
        client: smtplib.SMTP
        if settings.smtp_tls:
            client = smtplib.SMTP_SSL(
                host,
                settings.smtp_port,
                timeout=settings.smtp_timeout,
                context=ssl.create_default_context(),
            )
        else:
            client = smtplib.SMTP(host, settings.smtp_port, timeout=settings.smtp_timeout)
        with client:
            if settings.smtp_starttls and not settings.smtp_tls:
                client.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                password = settings.smtp_password
                client.login(
                    settings.smtp_username, password.get_secret_value() if password else ""
                )
            refused = client.send_message(message, from_addr=sender, to_addrs=recipients)
    except smtplib.SMTPRecipientsRefused as exc:  # every recipient refused
        replies = {addr: _reply(code, text) for addr, (code, text) in exc.recipients.items()}
        detail = "; ".join(f"{addr}: {reply}" for addr, reply in replies.items())
        if all(code >= 500 for code, _ in exc.recipients.values()):
            raise SmtpRefused(f"{where} refused every recipient: {detail}") from exc
        raise SmtpUnavailable(f"{where} deferred the recipients: {detail}") from exc
    except smtplib.SMTPResponseException as exc:  # sender, data, login, helo, connect
        reply = _reply(exc.smtp_code, exc.smtp_error)
        kind = type(exc).__name__
        if exc.smtp_code >= 500:
            raise SmtpRefused(f"{where} refused ({kind}): {reply}") from exc
        raise SmtpUnavailable(f"{where} answered ({kind}): {reply}") from exc
    except (smtplib.SMTPException, OSError) as exc:  # connection, TLS, timeout, no STARTTLS
        raise SmtpUnavailable(f"cannot send through {where}: {type(exc).__name__}: {exc}") from exc
    return {addr: _reply(code, text) for addr, (code, text) in refused.items()}


def _reply(code: int, text: bytes | str) -> str:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {message}".strip()


def send_email(ctx: JobContext, payload: EmailPayload, settings: Settings) -> EmailResult:
    """Render, build and deliver one ``email`` job (blocking: runs in a worker thread)."""
    to_outbox = settings.smtp_host is None
    # The outbox file keeps a Bcc header: nothing strips it on the way, and it is the file's
    # only record of the blind recipients.
    message, sender, recipients = build_message(
        payload, job_id=ctx.job_id, default_from=settings.smtp_from, bcc_header=to_outbox
    )
    message_id = message_id_for(ctx.job_id)
    if to_outbox:
        path = write_outbox(message, settings.outbox_dir, ctx.job_id)
        return EmailResult(
            message_id=message_id,
            recipients=len(recipients),
            delivered_via="outbox",
            outbox_path=str(path),
        )
    refused = send_smtp(message, sender, recipients, settings)
    return EmailResult(
        message_id=message_id,
        recipients=len(recipients) - len(refused),
        delivered_via="smtp",
        refused=refused,
    )


def register(registry: TaskRegistry, settings: Settings) -> None:
    """Register the handler of ``email`` jobs."""

    def email(ctx: JobContext, payload: EmailPayload) -> EmailResult:
        return send_email(ctx, payload, settings)

    registry.task("email")(email)
