"""TLS for NATS client connections, with a CA and certificates made at test time: a service
connects over TLS as its role, a plaintext client is refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.natsconn import connect_as
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.topology import ensure_topology
from ferrisqueue.settings import Settings
from tests.conftest import settings_for
from tests.support.procs import module_argv, service_env, start_service
from tests.support.secured import SecuredNats, start_secured
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("fq-client@example.test")
    folder = tmp_path / "pki"
    folder.mkdir()
    paths = Pki(*(folder / n for n in ("ca.pem", "srv.pem", "srv.key", "cli.pem", "cli.key")))
    ca.cert_pem.write_to_path(str(paths.ca))
    server.cert_chain_pems[0].write_to_path(str(paths.server_cert))
    server.private_key_pem.write_to_path(str(paths.server_key))
    client.cert_chain_pems[0].write_to_path(str(paths.client_cert))
    client.private_key_pem.write_to_path(str(paths.client_key))
    return paths


@pytest.fixture
def secured(tmp_path: Path, pki: Pki) -> Iterator[SecuredNats]:
    """Users and TLS, with client certificates required (mutual TLS)."""
    tls = (
        f'tls {{\n  cert_file: "{pki.server_cert}"\n  key_file: "{pki.server_key}"\n'
        f'  ca_file: "{pki.ca}"\n  verify: true\n  timeout: 2\n}}\n'
    )
    server = start_secured(tmp_path / "nats", queues=("default",), extra=tls)
    yield server
    server.server.stop()


def tls_settings(tmp_path: Path, secured: SecuredNats, pki: Pki, user: str) -> Settings:
    return settings_for(
        tmp_path,
        secured.url,
        nats_user=user,
        nats_password=secured.passwords[user],
        nats_tls_ca=pki.ca,
        nats_tls_cert=pki.client_cert,
        nats_tls_key=pki.client_key,
    )


async def test_a_role_connects_over_tls_and_works(
    secured: SecuredNats, pki: Pki, tmp_path: Path
) -> None:
    admin = tls_settings(tmp_path, secured, pki, "admin")
    nc = await connect_as(admin, name="test-admin")
    try:
        await ensure_topology(NatsLog(nc), admin)
        ack = await nc.jetstream().publish("fq.job.default.j1.started", b"{}")
        assert ack.stream == EVENT_STREAM
    finally:
        await nc.close()


async def test_a_service_process_runs_over_tls(
    secured: SecuredNats, pki: Pki, tmp_path: Path
) -> None:
    admin = tls_settings(tmp_path, secured, pki, "admin")
    nc = await connect_as(admin, name="test-admin")
    try:
        await ensure_topology(NatsLog(nc), admin)
    finally:
        await nc.close()
    gateway_settings = tls_settings(tmp_path, secured, pki, "gateway")
    env = service_env(
        gateway_settings,
        **secured.env("gateway"),
        FQ_NATS_TLS_CA=str(pki.ca),
        FQ_NATS_TLS_CERT=str(pki.client_cert),
        FQ_NATS_TLS_KEY=str(pki.client_key),
    )
    gateway = start_service("gateway", module_argv("gateway"), env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=str(gateway_settings.gateway_url)) as http:

            async def submit() -> int:
                assert gateway.alive(), gateway.log()
                try:
                    return (await http.post("/jobs", json={"type": "echo"})).status_code
                except httpx.TransportError:
                    return 0

            await wait_until(submit, lambda code: code == 202, timeout=30, what="a 202 over TLS")
    finally:
        gateway.terminate()
    assert secured.violations() == []


async def test_without_the_ca_the_server_is_not_trusted(
    secured: SecuredNats, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A service keeps trying (as on any outage) and says why it cannot connect."""
    stranger = trustme.CA()
    other_ca = tmp_path / "other-ca.pem"
    stranger.cert_pem.write_to_path(str(other_ca))
    wrong = tls_settings(tmp_path, secured, pki, "gateway").model_copy(
        update={"nats_tls_ca": other_ca}
    )

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(connect_as(wrong, name="test-stranger"), 3)

    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


async def test_a_plaintext_client_is_refused(secured: SecuredNats) -> None:
    """Speak the NATS protocol in clear text, as a client without TLS would."""
    reader, writer = await asyncio.open_connection("127.0.0.1", secured.server.port)
    try:
        info = await asyncio.wait_for(reader.readline(), 5)
        assert b'"tls_required":true' in info
        password = secured.passwords["gateway"]
        connect = f'CONNECT {{"user":"gateway","pass":"{password}","verbose":false}}\r\n'
        writer.write(connect.encode() + b"PUB fq.job.default.x.submitted 2\r\n{}\r\nPING\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 5)
    finally:
        writer.close()
    # The server wanted a TLS handshake, read clear text instead, and hung up: no PONG.
    assert answer == b""
