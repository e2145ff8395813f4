"""The topology on a 3-node cluster: streams are created with ``FQ_STREAM_REPLICAS`` replicas,
and a process started without that setting (a one-off ``fq`` command, say) leaves an R3
stream at R3 instead of scaling it down to the default R1."""

from __future__ import annotations

import pytest

from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.natsconn import connect
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.topology import ensure_streams
from ferrisqueue.settings import Settings
from tests.support.cluster import NatsCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_a_process_without_the_replica_setting_does_not_rescale_streams(
    cluster: NatsCluster,
) -> None:
    await cluster.wait_ready()
    nc = await connect(cluster.url, name="fq-test")
    log = NatsLog(nc)
    try:
        await ensure_streams(log, Settings(_env_file=None, stream_replicas=3))  # type: ignore[call-arg]
        created = await nc.jetstream().stream_info(EVENT_STREAM)
        await ensure_streams(log, Settings(_env_file=None))  # type: ignore[call-arg]
        kept = await nc.jetstream().stream_info(EVENT_STREAM)
        await ensure_streams(log, Settings(_env_file=None, stream_replicas=1))  # type: ignore[call-arg]
        chosen = await nc.jetstream().stream_info(EVENT_STREAM)
    finally:
        await nc.close()

    assert created.config.num_replicas == 3
    assert kept.config.num_replicas == 3
    assert chosen.config.num_replicas == 1  # set explicitly: an operator's decision
