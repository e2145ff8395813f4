"""The email task without a network: rendering, the message it builds, the outbox file."""

from __future__ import annotations

import asyncio
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ferrisqueue.errors import Permanent
from ferrisqueue.jobtypes.email import EmailPayload, EmailResult
from ferrisqueue.settings import Settings
from worker.context import JobContext
from worker.tasks import email as task
from worker.tasks.email import TemplateFailed, build_message, render, send_email


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """No SMTP host: messages go to the outbox."""
    return Settings(_env_file=None, var_dir=tmp_path / "var")  # type: ignore[call-arg]


def payload(**fields: Any) -> EmailPayload:
    base: dict[str, Any] = {
        "to": ["Ada Lovelace <ada@example.com>"],
        "subject_template": "Order {{ order }} shipped",
        "text_template": "Hello {{ name }},\nyour order {{ order }} is on its way.\n",
        "html_template": "<p>Hello {{ name }}, order <b>{{ order }}</b> shipped.</p>",
        "variables": {"name": "Ada", "order": 42},
    }
    return EmailPayload.model_validate(base | fields)


def parts(message: EmailMessage) -> dict[str, str]:
    """Content type -> decoded body of every leaf part."""
    return {
        part.get_content_type(): part.get_content()
        for part in message.walk()
        if not part.is_multipart()
    }


def read_eml(path: Path | str) -> EmailMessage:
    written = message_from_bytes(Path(path).read_bytes(), policy=default)
    assert isinstance(written, EmailMessage)
    return written


async def send(settings: Settings, email: EmailPayload, job_id: str = "job-1") -> EmailResult:
    async def report(fraction: float, message: str | None) -> None:
        pass

    ctx = JobContext(job_id, "default", "email", 1, "test", report, asyncio.get_running_loop())
    return await asyncio.to_thread(send_email, ctx, email, settings)


def test_templates_render_into_subject_text_and_html() -> None:
    message, sender, recipients = build_message(
        payload(cc=["bob@example.com"], bcc=["eve@example.com"], reply_to="help@example.com"),
        job_id="job-1",
        default_from="Shop <shop@example.com>",
    )

    assert message["Subject"] == "Order 42 shipped"
    assert message["From"] == "Shop <shop@example.com>"
    assert message["To"] == "Ada Lovelace <ada@example.com>"
    assert message["Cc"] == "bob@example.com"
    assert message["Reply-To"] == "help@example.com"
    assert message["Bcc"] is None  # blind copies travel in the envelope only
    assert message.get_content_type() == "multipart/alternative"
    bodies = parts(message)
    assert bodies["text/plain"] == "Hello Ada,\nyour order 42 is on its way.\n"
    assert bodies["text/html"].strip() == "<p>Hello Ada, order <b>42</b> shipped.</p>"
    assert sender == "shop@example.com"
    assert recipients == ["ada@example.com", "bob@example.com", "eve@example.com"]


def test_without_html_the_message_is_plain_text() -> None:
    message, _, _ = build_message(
        payload(html_template=None), job_id="job-1", default_from="a@example.com"
    )

    assert message.get_content_type() == "text/plain"
    assert not message.is_multipart()


def test_a_missing_variable_fails_permanently_naming_it() -> None:
    with pytest.raises(TemplateFailed, match="text_template: 'name' is undefined") as raised:
        render(payload(variables={"order": 42}))

    assert isinstance(raised.value, Permanent)


def test_html_is_escaped_and_text_is_not() -> None:
    subject, text, html = render(
        payload(
            subject_template="{{ name }}",
            text_template="{{ name }}",
            html_template="<p>{{ name }}</p>",
            variables={"name": "<script>alert('x')</script> & co"},
        )
    )

    assert text == "<script>alert('x')</script> & co"
    assert subject == text
    assert html == "<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co</p>"


def test_line_breaks_in_the_subject_cannot_inject_headers() -> None:
    subject, _, _ = render(
        payload(
            subject_template="{{ s }}",
            text_template="",
            html_template=None,
            variables={"s": "Hi\r\nBcc: eve@example.com"},
        )
    )

    assert subject == "Hi Bcc: eve@example.com"


def test_the_sandbox_refuses_unsafe_attributes() -> None:
    with pytest.raises(TemplateFailed, match="text_template"):
        render(payload(text_template="{{ ''.__class__.__mro__[1].__subclasses__() }}"))


def test_rendered_output_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task, "MAX_RENDERED_CHARS", 1_000)

    with pytest.raises(TemplateFailed, match="renders to more than 1000 chars"):
        render(payload(text_template="{% for i in range(100000) %}{{ i }}{% endfor %}"))


def test_template_syntax_errors_are_permanent() -> None:
    with pytest.raises(TemplateFailed, match="html_template"):
        render(payload(html_template="{% for %}"))


def test_message_id_is_the_job_id_on_every_run() -> None:
    first, _, _ = build_message(payload(), job_id="job-7", default_from="a@example.com")
    again, _, _ = build_message(payload(), job_id="job-7", default_from="a@example.com")
    other, _, _ = build_message(payload(), job_id="job-8", default_from="a@example.com")

    assert first["Message-ID"] == again["Message-ID"] == "<job-7@ferrisqueue>"
    assert other["Message-ID"] == "<job-8@ferrisqueue>"


async def test_without_smtp_host_the_message_is_written_to_the_outbox(
    settings: Settings,
) -> None:
    email = payload(bcc=["eve@example.com"], headers={"X-Campaign": "spring"})

    result = await send(settings, email, job_id="job-42")

    path = settings.outbox_dir / "job-42.eml"
    assert result.delivered_via == "outbox"
    assert result.outbox_path == str(path)
    assert result.message_id == "<job-42@ferrisqueue>"
    assert result.recipients == 2
    written = read_eml(path)
    assert written["Message-ID"] == "<job-42@ferrisqueue>"
    assert written["Subject"] == "Order 42 shipped"
    assert written["Bcc"] == "eve@example.com"  # the outbox file's record of the envelope
    assert written["X-Campaign"] == "spring"
    assert "order 42 is on its way" in parts(written)["text/plain"]


async def test_a_second_run_replaces_the_outbox_file(settings: Settings) -> None:
    await send(settings, payload(variables={"name": "Ada", "order": 1}), job_id="job-9")
    await send(settings, payload(variables={"name": "Ada", "order": 2}), job_id="job-9")

    files = sorted(p.name for p in settings.outbox_dir.iterdir())
    assert files == ["job-9.eml"]  # no second file, no temp file left behind
    written = read_eml(settings.outbox_dir / "job-9.eml")
    assert written["Subject"] == "Order 2 shipped"


async def test_from_defaults_to_the_configured_sender(settings: Settings) -> None:
    configured = settings.model_copy(update={"smtp_from": "Robot <robot@example.com>"})

    result = await send(configured, payload())

    assert result.outbox_path is not None
    written = read_eml(result.outbox_path)
    assert written["From"] == "Robot <robot@example.com>"


def test_from_is_accepted_under_its_json_name() -> None:
    email = EmailPayload.model_validate(
        {
            "to": ["a@example.com"],
            "from": "b@example.com",
            "subject_template": "s",
            "text_template": "",
        }
    )

    assert email.from_ == "b@example.com"
    assert "from" in EmailPayload.model_json_schema()["properties"]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"to": []}, "at least 1 item"),
        ({"to": ["not an address"]}, "is not an email address"),
        ({"to": ["a@example.com, b@example.com"]}, "exactly one address"),
        ({"to": ["a@example.com\r\nBcc: eve@example.com"]}, "line breaks"),
        ({"to": [f"u{n}@example.com" for n in range(101)]}, "at most 100 items"),
        ({"cc": ["@example.com"]}, "is not an email address"),
        ({"headers": {"Bcc": "eve@example.com"}}, "may not be set by a payload"),
        ({"headers": {"Content-Type": "text/html"}}, "may not be set by a payload"),
        ({"headers": {"X-Ok": "a\nb"}}, "one line"),
        ({"headers": {"X Bad": "1"}}, "letters, digits"),
        ({"extra": 1}, "Extra inputs are not permitted"),
    ],
    ids=[
        "no-recipient",
        "not-an-address",
        "two-in-one",
        "header-injection",
        "too-many",
        "bad-cc",
        "bcc-header",
        "content-type-header",
        "multiline-header",
        "bad-header-name",
        "unknown-field",
    ],
)
def test_the_contract_refuses_bad_payloads(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        payload(**fields)


def test_safe_headers_are_accepted_case_insensitively() -> None:
    email = payload(headers={"in-reply-to": "<x@example.com>", "X-Anything": "1"})

    message, _, _ = build_message(email, job_id="j", default_from="a@example.com")

    assert message["In-Reply-To"] == "<x@example.com>"
    assert message["X-Anything"] == "1"
