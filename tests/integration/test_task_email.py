"""Email jobs against a real SMTP server (aiosmtpd on a free loopback port): through a real
worker process, and the task's SMTP client on its own for the server's refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from nats.aio.client import Client

from ferrisqueue.domain.events import Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.errors import Permanent
from ferrisqueue.jobtypes.email import EmailPayload, EmailResult
from ferrisqueue.log.embedded import free_port
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from tests.conftest import StartService
from tests.support.waits import collect_events
from worker.context import JobContext
from worker.tasks.email import SmtpRefused, SmtpUnavailable, send_email

pytestmark = pytest.mark.integration

USER, PASSWORD = "mailer", "s3cret"


@dataclass
class Inbox:
    """The SMTP server's handler: keeps every envelope; refuses recipients on request."""

    received: list[Envelope] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)
    """Recipient -> the reply its RCPT TO gets instead of 250 (e.g. '550 no such user')."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.replies:
            return self.replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        return "250 Message accepted"

    def message(self, index: int = 0) -> EmailMessage:
        content = self.received[index].content
        assert isinstance(content, bytes)
        parsed = message_from_bytes(content.replace(b"\r\n", b"\n"), policy=default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SmtpServer:
    port: int
    inbox: Inbox


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    # handled=False: aiosmtpd itself answers a failure (535).
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server on 127.0.0.1, offering AUTH without TLS (loopback only)."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    yield SmtpServer(port, inbox)
    controller.stop()


def email_payload(**fields: Any) -> dict[str, Any]:
    return {
        "to": ["Ada Lovelace <ada@example.com>", "bob@example.com"],
        "cc": ["carol@example.com"],
        "bcc": ["audit@example.com"],
        "from": "Shop <shop@example.com>",
        "subject_template": "Invoice {{ invoice.number }} for {{ customer }}",
        "text_template": "Dear {{ customer }},\nyou owe {{ invoice.total }} EUR.\n",
        "html_template": "<h1>Dear {{ customer }}</h1><p>You owe {{ invoice.total }} EUR.</p>",
        "variables": {"customer": "Ada & <Co>", "invoice": {"number": "2026-17", "total": 99}},
        **fields,
    }


async def outcome(nc: Client, job_id: str) -> dict[str, Any]:
    """The job's succeeded or failed event, read from the event log."""
    events = await collect_events(
        nc,
        f"fq.job.*.{job_id}.*",
        until=lambda bodies: any(b["event"] in ("succeeded", "failed") for b in bodies),
        timeout=30,
    )
    return next(b for b in events if b["event"] in ("succeeded", "failed"))


async def submit(event_log: EventLog, payload: dict[str, Any]) -> str:
    job_id = new_job_id()
    await event_log.append(
        Submitted(job_id=job_id, queue="default", at=utcnow(), type="email", payload=payload)
    )
    return job_id


# --- Through a worker process --------------------------------------------------------------


async def test_email_job_is_delivered_to_a_real_smtp_server(
    start: StartService, event_log: EventLog, nc: Client, smtp_server: SmtpServer
) -> None:
    start("worker", FQ_SMTP_HOST="127.0.0.1", FQ_SMTP_PORT=str(smtp_server.port))

    job_id = await submit(event_log, email_payload())
    final = await outcome(nc, job_id)

    assert final["event"] == "succeeded", final
    assert final["result"] == {
        "message_id": f"<{job_id}@ferrisqueue>",
        "recipients": 4,
        "delivered_via": "smtp",
        "outbox_path": None,
        "refused": {},
    }
    [envelope] = smtp_server.inbox.received
    assert envelope.mail_from == "shop@example.com"
    assert sorted(envelope.rcpt_tos) == [
        "ada@example.com",
        "audit@example.com",
        "bob@example.com",
        "carol@example.com",
    ]
    message = smtp_server.inbox.message()
    assert message["Subject"] == "Invoice 2026-17 for Ada & <Co>"
    assert message["Message-ID"] == f"<{job_id}@ferrisqueue>"
    assert message["To"] == "Ada Lovelace <ada@example.com>, bob@example.com"
    assert message["Cc"] == "carol@example.com"
    assert message["Bcc"] is None
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert text.get_content() == "Dear Ada & <Co>,\nyou owe 99 EUR.\n"
    assert html.get_content().strip() == (
        "<h1>Dear Ada &amp; &lt;Co&gt;</h1><p>You owe 99 EUR.</p>"
    )


async def test_email_job_with_a_missing_variable_fails_naming_it(
    start: StartService, event_log: EventLog, nc: Client, smtp_server: SmtpServer
) -> None:
    start("worker", FQ_SMTP_HOST="127.0.0.1", FQ_SMTP_PORT=str(smtp_server.port))

    job_id = await submit(event_log, email_payload(variables={"customer": "Ada"}))
    final = await outcome(nc, job_id)

    assert final["event"] == "failed"
    assert "'invoice' is undefined" in final["error"]
    assert final["error_type"] == "permanent:worker.tasks.email.TemplateFailed"
    assert smtp_server.inbox.received == []


# --- The SMTP client on its own ------------------------------------------------------------


async def send_to(server: SmtpServer, payload: dict[str, Any], **settings: Any) -> EmailResult:
    async def report(fraction: float, message: str | None) -> None:
        pass

    ctx = JobContext("job-smtp", "default", "email", 1, "test", report, asyncio.get_running_loop())
    configured = Settings(
        _env_file=None,  # type: ignore[call-arg]
        smtp_host="127.0.0.1",
        smtp_port=server.port,
        smtp_timeout=5.0,
        **settings,
    )
    return await asyncio.to_thread(
        send_email, ctx, EmailPayload.model_validate(payload), configured
    )


async def test_login_uses_the_configured_credentials(smtp_server: SmtpServer) -> None:
    result = await send_to(smtp_server, email_payload(), smtp_username=USER, smtp_password=PASSWORD)

    assert result.delivered_via == "smtp"
    assert len(smtp_server.inbox.received) == 1


async def test_a_refused_login_is_permanent(smtp_server: SmtpServer) -> None:
    with pytest.raises(SmtpRefused, match="535") as raised:
        await send_to(smtp_server, email_payload(), smtp_username=USER, smtp_password="wrong")

    assert isinstance(raised.value, Permanent)
    assert smtp_server.inbox.received == []


async def test_every_recipient_refused_for_good_is_permanent(smtp_server: SmtpServer) -> None:
    smtp_server.inbox.replies = {"nobody@example.com": "550 5.1.1 no such user"}

    with pytest.raises(SmtpRefused, match=r"nobody@example\.com: 550 5\.1\.1 no such user"):
        await send_to(smtp_server, email_payload(to=["nobody@example.com"], cc=[], bcc=[]))


async def test_a_temporary_refusal_is_retryable(smtp_server: SmtpServer) -> None:
    smtp_server.inbox.replies = {"busy@example.com": "451 4.3.0 try again later"}

    with pytest.raises(SmtpUnavailable, match="451") as raised:
        await send_to(smtp_server, email_payload(to=["busy@example.com"], cc=[], bcc=[]))

    assert not isinstance(raised.value, Permanent)


async def test_some_recipients_refused_still_sends_to_the_others(
    smtp_server: SmtpServer,
) -> None:
    smtp_server.inbox.replies = {"bob@example.com": "550 5.1.1 no such user"}

    result = await send_to(smtp_server, email_payload())

    assert result.refused == {"bob@example.com": "550 5.1.1 no such user"}
    assert result.recipients == 3
    assert sorted(smtp_server.inbox.received[0].rcpt_tos) == [
        "ada@example.com",
        "audit@example.com",
        "carol@example.com",
    ]


async def test_no_server_listening_is_retryable() -> None:
    nobody = SmtpServer(free_port(), Inbox())

    with pytest.raises(SmtpUnavailable, match=r"cannot send through 127\.0\.0\.1") as raised:
        await send_to(nobody, email_payload())

    assert not isinstance(raised.value, Permanent)
