"""NATS identity settings, what they become for nats-py, and `fq up`'s generated users."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import ValidationError

from ferrisqueue.cli.nats_users import ensure_users, with_admin_identity
from ferrisqueue.cli.up import nats_identity, services
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.log.natsconn import NatsAccess
from ferrisqueue.settings import Settings


def settings(tmp_path: Path, **fields: Any) -> Settings:
    return Settings(_env_file=None, var_dir=tmp_path / "var", **fields)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"nats_user": "gateway"}, "go together"),
        ({"nats_password": "fqsecret123"}, "go together"),
        ({"nats_user": "gateway", "nats_password": "  "}, "empty"),
        ({"nats_user": "gateway", "nats_password": "CHANGE-ME"}, "placeholder"),
        (
            {"nats_user": "g", "nats_password": "fqsecret123", "nats_password_file": "/x"},
            "not both",
        ),
        ({"nats_user": "g", "nats_password": "fqsecret123", "nats_creds": "/x"}, "not both"),
        ({"nats_tls_ca": "/ca", "nats_tls_cert": "/c"}, "go together"),
        ({"nats_inbox_prefix": "_INBOX.>"}, "pattern"),
    ],
)
def test_an_incomplete_or_placeholder_identity_is_refused(
    tmp_path: Path, fields: dict[str, Any], why: str
) -> None:
    with pytest.raises(ValidationError, match=why):
        settings(tmp_path, **fields)


def test_without_an_identity_a_process_connects_anonymously(tmp_path: Path) -> None:
    plain = settings(tmp_path)

    assert not plain.nats_authenticated
    assert NatsAccess.from_settings(plain).options() == {}


def test_a_user_gets_its_roles_inbox_prefix(tmp_path: Path) -> None:
    role = settings(tmp_path, nats_user="worker-default", nats_password="fqsecret123")

    options = NatsAccess.from_settings(role).options()

    assert role.nats_authenticated
    assert options == {
        "user": "worker-default",
        "password": "fqsecret123",
        "inbox_prefix": "_INBOX_worker-default",
    }


def test_the_password_file_is_read_and_an_empty_one_refused(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("fqfromafile42\n")
    role = settings(tmp_path, nats_user="gateway", nats_password_file=secret)

    assert NatsAccess.from_settings(role).password == "fqfromafile42"
    secret.write_text("\n")
    with pytest.raises(ConfigurationError, match="empty"):
        NatsAccess.from_settings(role)


def test_a_creds_file_and_an_explicit_prefix_pass_through(tmp_path: Path) -> None:
    role = settings(tmp_path, nats_creds=tmp_path / "x.creds", nats_inbox_prefix="_INBOX_mine")

    options = NatsAccess.from_settings(role).options()

    assert options == {"user_credentials": str(tmp_path / "x.creds"), "inbox_prefix": "_INBOX_mine"}
    assert role.nats_authenticated


def test_tls_settings_make_a_verifying_client_context(tmp_path: Path) -> None:
    ca = trustme.CA()
    client = ca.issue_cert("client@example.test")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "c.key"))
    tls = settings(
        tmp_path,
        nats_tls_ca=tmp_path / "ca.pem",
        nats_tls_cert=tmp_path / "c.pem",
        nats_tls_key=tmp_path / "c.key",
    )

    context = NatsAccess.from_settings(tls).options()["tls"]

    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    missing = tls.model_copy(update={"nats_tls_ca": tmp_path / "nope.pem"})
    with pytest.raises(ConfigurationError, match="FQ_NATS_TLS"):
        NatsAccess.from_settings(missing).options()


# --- fq up -----------------------------------------------------------------------------------


def test_fq_up_makes_the_users_once_in_a_private_file(tmp_path: Path) -> None:
    first = ensure_users(settings(tmp_path))
    again = ensure_users(settings(tmp_path))

    assert first.created and not again.created
    assert again.passwords == first.passwords
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert set(first.server_env()) == {r.password_env for r in first.roles}
    assert "operator" in first.announcement("nats://127.0.0.1:4322")


def test_a_new_queue_gets_its_user_and_the_others_keep_theirs(tmp_path: Path) -> None:
    first = ensure_users(settings(tmp_path))
    more = ensure_users(settings(tmp_path, worker_queues="default,emails"))

    assert more.passwords["worker-emails"]
    assert more.passwords["worker-default"] == first.passwords["worker-default"]


def test_each_child_of_fq_up_connects_as_its_own_role(tmp_path: Path) -> None:
    config = settings(tmp_path, worker_queues="default,emails", workers=2)
    users = ensure_users(config)

    found = {
        s.name: nats_identity(s, users).get("FQ_NATS_USER") for s in services(config, "nats://x")
    }

    assert found == {
        "projector": "projector",
        "gateway": "gateway",
        "scheduler": "scheduler",
        "worker-default-1": "worker-default",
        "worker-default-2": "worker-default",
        "worker-emails-1": "worker-emails",
        "worker-emails-2": "worker-emails",
        "dashboard": None,
    }


def test_the_cli_acts_as_admin_against_fq_ups_embedded_server_only(tmp_path: Path) -> None:
    plain = settings(tmp_path)
    assert with_admin_identity(plain) is plain  # no users file yet
    users = ensure_users(plain)

    admin = with_admin_identity(plain)
    remote = with_admin_identity(settings(tmp_path, nats_url="nats://elsewhere:4222"))

    assert admin.nats_user == "admin"
    assert admin.nats_password is not None
    assert admin.nats_password.get_secret_value() == users.passwords["admin"]
    assert remote.nats_user is None


def test_fq_up_runs_a_projector_per_partition_each_allowed_its_own_consumer(
    tmp_path: Path,
) -> None:
    config = settings(tmp_path, projector_partitions=2, metrics_port=9200, workers=2)
    users = ensure_users(config)

    projectors = [s for s in services(config, "nats://x") if s.name.startswith("projector")]

    assert [s.name for s in projectors] == ["projector-0of2", "projector-1of2"]
    assert [nats_identity(s, users).get("FQ_NATS_USER") for s in projectors] == ["projector"] * 2
    assert [
        (s.env["FQ_PROJECTOR_PARTITIONS"], s.env["FQ_PROJECTOR_PARTITION"]) for s in projectors
    ] == [("2", "0"), ("2", "1")]
    ports = [s.env.get("FQ_METRICS_PORT") for s in services(config, "nats://x")]
    taken = [p for p in ports if p is not None]
    assert len(taken) == len(set(taken))  # the second partition's port is no worker's
    role = next(r for r in users.roles if r.user == "projector")
    for consumer in ("fq-projector-0of2", "fq-projector-1of2"):
        assert f"$JS.API.CONSUMER.MSG.NEXT.FQ_EVENTS.{consumer}" in role.publish
        assert f"$JS.API.CONSUMER.CREATE.FQ_EVENTS.{consumer}" in role.publish
    assert "$JS.API.CONSUMER.MSG.NEXT.FQ_WORKERS.fq-projector-workers" in role.publish
