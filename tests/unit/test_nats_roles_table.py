"""The NATS role table (ferrisqueue/log/roles.py): least privilege read off the table itself,
the rendered block accepted by the pinned nats-server, and the docs showing the same table."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferrisqueue.domain.subjects import subject_matches
from ferrisqueue.log.roles import (
    PASSWORD_FORM,
    Role,
    new_password,
    render_authorization,
    render_markdown_table,
    roles,
)
from tests.support.natsconf import check_server_config, role_passwords

ROOT = Path(__file__).resolve().parents[2]
QUEUES = ("default", "emails")
ALL = roles(QUEUES)
RUNTIME = [r for r in ALL if r.user != "admin"]


def may_publish(role: Role, subject: str) -> bool:
    return any(subject_matches(subject, pattern) for pattern in role.publish)


def may_subscribe(role: Role, subject: str) -> bool:
    return any(subject_matches(subject, pattern) for pattern in role.subscribe)


def test_there_is_a_user_per_role_and_per_queue() -> None:
    users = [r.user for r in ALL]

    assert users == [
        "admin",
        "operator",
        "gateway",
        "projector",
        "scheduler",
        "producer",
        "worker-default",
        "worker-emails",
    ]
    assert len({r.password_env for r in ALL}) == len(ALL)
    assert ALL[-2].password_env == "NATS_PASSWORD_WORKER_DEFAULT"


@pytest.mark.parametrize(
    "api",
    [
        "$JS.API.STREAM.CREATE.FQ_EVENTS",
        "$JS.API.STREAM.UPDATE.FQ_EVENTS",
        "$JS.API.STREAM.DELETE.FQ_EVENTS",
        "$JS.API.STREAM.PURGE.FQ_EVENTS",
        "$JS.API.STREAM.MSG.DELETE.FQ_EVENTS",
        "$JS.API.CONSUMER.CREATE.FQ_EVENTS.fq-worker-default",
        "$JS.API.CONSUMER.DURABLE.CREATE.FQ_EVENTS.fq-scheduler-timers",
        "$JS.API.CONSUMER.DELETE.FQ_EVENTS.fq-worker-emails",
        "$JS.API.CONSUMER.CREATE.FQ_DLQ",
    ],
)
def test_only_admin_may_change_streams_and_fixed_consumers(api: str) -> None:
    assert [r.user for r in ALL if may_publish(r, api)] == ["admin"]


def test_the_projector_may_recreate_only_its_own_consumers() -> None:
    (projector,) = [r for r in ALL if r.user == "projector"]

    assert may_publish(projector, "$JS.API.CONSUMER.CREATE.FQ_EVENTS.fq-projector")
    assert may_publish(projector, "$JS.API.CONSUMER.DELETE.FQ_WORKERS.fq-projector-workers")
    assert not may_publish(projector, "$JS.API.CONSUMER.CREATE.FQ_EVENTS.fq-dlq-sweeper")
    assert not [p for p in projector.publish if not p.startswith("$JS.")]


@pytest.mark.parametrize("event", ["submitted", "released", "redriven", "cancel_requested"])
def test_a_worker_cannot_make_work_runnable_or_touch_another_queue(event: str) -> None:
    (worker,) = [r for r in ALL if r.user == "worker-default"]

    assert not may_publish(worker, f"fq.job.default.j1.{event}")
    assert not may_publish(worker, "fq.job.emails.j1.succeeded")
    assert not may_publish(worker, "fq.dlq.emails.j1")
    assert not may_publish(worker, "$JS.API.CONSUMER.MSG.NEXT.FQ_EVENTS.fq-worker-emails")
    assert not may_publish(worker, "$JS.ACK.FQ_EVENTS.fq-worker-emails.1.2.3.4.5")
    assert may_publish(worker, "fq.job.default.j1.succeeded")
    assert may_publish(worker, "$JS.ACK.FQ_EVENTS.fq-worker-default.1.2.3.4.5")
    assert may_publish(worker, "$JS.ACK.dom.HASH.FQ_EVENTS.fq-worker-default.1.2.3.4.5.6")


def test_only_the_gateway_pauses_queues_and_each_queues_workers_watch_theirs() -> None:
    pausers = [r.user for r in RUNTIME if may_publish(r, "fq.queue.default.paused")]
    (worker,) = [r for r in ALL if r.user == "worker-default"]

    assert pausers == ["gateway"]
    assert may_subscribe(worker, "fq.queue.default.paused")
    assert may_subscribe(worker, "fq.queue.default.resumed")
    assert not may_subscribe(worker, "fq.queue.emails.paused")
    assert may_publish(worker, "$JS.API.DIRECT.GET.FQ_CONTROLS.fq.queue.default.*")
    assert not may_publish(worker, "fq.queue.default.resumed")


def test_no_runtime_role_reads_the_dead_letters_but_those_that_handle_them() -> None:
    readers = [r.user for r in ALL if may_publish(r, "$JS.API.DIRECT.GET.FQ_DLQ.fq.dlq.x.y")]

    assert readers == ["admin", "operator", "gateway", "scheduler"]


@pytest.mark.parametrize("event", ["submitted", "scheduled"])
def test_the_producer_may_only_create_jobs(event: str) -> None:
    (producer,) = [r for r in ALL if r.user == "producer"]

    assert may_publish(producer, f"fq.job.default.j1.{event}")
    assert may_publish(producer, f"fq.job.emails.j1.{event}")
    for subject in (
        "fq.job.default.j1.started",
        "fq.job.default.j1.redriven",
        "fq.job.default.j1.cancel_requested",
        "fq.job.default.j1.submitted.x",
        "fq.dlq.default.j1",
        "fq.cron.x",
        "$KV.FQ_CRON.x",
        "$JS.API.STREAM.INFO.FQ_EVENTS",
    ):
        assert not may_publish(producer, subject), subject
    assert not [p for p in producer.publish if p.startswith("$")]
    assert producer.subscribe == ("_INBOX_producer.>",)


def test_the_operator_publishes_nothing_but_read_only_api_requests() -> None:
    (operator,) = [r for r in ALL if r.user == "operator"]

    assert all(p.startswith("$JS.API.") for p in operator.publish)
    assert not any(
        verb in p for p in operator.publish for verb in ("CREATE", "UPDATE", "DELETE", "PURGE")
    )


@pytest.mark.parametrize("role", ALL, ids=lambda r: r.user)
def test_each_role_subscribes_to_its_own_inbox_and_no_other(role: Role) -> None:
    assert may_subscribe(role, f"{role.inbox_prefix}.abc.1")
    for other in ALL:
        if other is not role:
            assert not may_subscribe(role, f"{other.inbox_prefix}.abc.1"), other.user
    assert not may_subscribe(role, "_INBOX.abc")


def test_the_rendered_block_is_accepted_by_the_pinned_server(tmp_path: Path) -> None:
    config = tmp_path / "nats.conf"
    config.write_text("port: 4999\n" + render_authorization(ALL))

    check_server_config(config, role_passwords(QUEUES))


def test_generated_passwords_survive_the_servers_config_parser() -> None:
    passwords = {new_password() for _ in range(50)}

    assert len(passwords) == 50
    assert all(PASSWORD_FORM.match(p) for p in passwords)


def test_docs_show_the_role_table_the_code_has() -> None:
    docs = (ROOT / "docs" / "security.md").read_text()

    assert render_markdown_table(roles(["default"])) in docs
