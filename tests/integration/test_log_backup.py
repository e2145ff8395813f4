"""``fq log backup`` and ``fq log restore``: a log restored on a new server holds the same
messages at the same sequences, so the read store's checkpoints (FQ_EVENTS sequences) still
mean what they meant, and the restored consumers remember which jobs already ran."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.events import Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.embedded import EmbeddedNats, free_port
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.settings import Settings
from tests.conftest import StartService, settings_for
from tests.integration.test_projector import read_store, wait_caught_up
from tests.support.procs import module_argv, run_fq, service_env, start_service

pytestmark = pytest.mark.integration

Stored = tuple[int, str, dict[str, str], bytes, datetime | None]


async def test_a_restored_log_keeps_every_sequence_and_the_read_store_agrees(
    start: StartService,
    nc: Client,
    settings: Settings,
    event_log: EventLog,
    nats_server: EmbeddedNats,
    tmp_path: Path,
) -> None:
    services = [start("worker"), start("projections")]
    ids = [new_job_id() for _ in range(8)]
    for job_id in ids:
        await event_log.append(Submitted(job_id=job_id, queue="default", at=utcnow(), type="echo"))
    engine = read_store(settings.effective_database_url)
    last = await wait_caught_up(engine, nc)
    for service in services:
        service.terminate()
    before = await _stored(nc)
    folder = tmp_path / "backup"

    backup = await run_fq(settings, tmp_path, "log", "backup", str(folder))
    over_the_live_log = await run_fq(settings, tmp_path, "log", "restore", str(folder))
    await nc.close()
    nats_server.stop()  # the disaster: the server and its store are gone
    fresh = EmbeddedNats(tmp_path / "nats-fresh", free_port())
    fresh.start()
    restored = settings_for(tmp_path, fresh.url)  # the same read store (read.db)
    later: list[Any] = []
    try:
        restore = await run_fq(restored, tmp_path, "log", "restore", str(folder))
        nc2 = await nats.connect(fresh.url)
        try:
            after = await _stored(nc2)
            verified = await run_fq(restored, tmp_path, "projections", "verify")
            for module in ("worker", "projections"):
                later.append(
                    start_service(
                        f"{module}-fresh", module_argv(module), service_env(restored), tmp_path
                    )
                )
            one_more = Submitted(job_id=new_job_id(), queue="default", at=utcnow(), type="echo")
            next_seq = await NatsLog(nc2).append(one_more)
            await wait_caught_up(engine, nc2)
            starts = [s[1] for s in await _stored(nc2) if s[1].endswith(".started")]
        finally:
            await nc2.close()
        verified_later = await run_fq(restored, tmp_path, "projections", "verify")
    finally:
        for service in later:
            service.terminate()
        fresh.stop()
        engine.dispose()

    assert backup.returncode == 0, backup.stderr
    assert f"{EVENT_STREAM}: {len(before)} messages, sequences 1-{last}" in backup.stdout
    assert over_the_live_log.returncode == 1
    assert "already in use" in over_the_live_log.stderr
    assert restore.returncode == 0, restore.stderr
    assert f"{EVENT_STREAM}: {len(before)} messages, sequences 1-{last}" in restore.stdout
    assert after == before  # same sequences, subjects, headers, bodies, storage times
    assert any("Nats-Msg-Id" in headers for _, _, headers, _, _ in after)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"compared {len(ids)} jobs up to stream sequence {last}" in verified.stdout
    assert next_seq == last + 1
    # The restored dispatch consumer knew every job had run: none ran again.
    assert len(set(starts)) == len(starts) == len(ids) + 1
    assert verified_later.returncode == 0, verified_later.stdout + verified_later.stderr
    assert verified_later.stdout.rstrip().endswith("0 differences")


async def _stored(nc: Client) -> list[Stored]:
    """Every message of FQ_EVENTS with what a restore must keep."""
    js = nc.jetstream()
    last = (await js.stream_info(EVENT_STREAM)).state.last_seq
    found = []
    for seq in range(1, last + 1):
        msg = await js.get_msg(EVENT_STREAM, seq)
        found.append((seq, msg.subject or "", dict(msg.headers or {}), msg.data or b"", msg.time))
    return found
