"""Reading a delivered message's place in its stream from its ack subject agrees with
nats-py's own ``Msg.metadata`` in both forms of the subject, and refuses what is not a
JetStream delivery the same way. Its storage time is truncated to microseconds, as nats-py
reads a stored message's time, so a delivery and a read of one message agree exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from ferrisqueue.log.puller import NatsDelivery

NANOS = 1_764_316_800_123_456_789

V1 = f"$JS.ACK.FQ_EVENTS.fq-dispatch-default.3.1042.77.{NANOS}.12"
V2 = f"$JS.ACK._.ACCHASH.FQ_EVENTS.fq-dispatch-default.3.1042.77.{NANOS}.12"
V2_WITH_TOKEN = f"{V2}.randomtoken"


@pytest.mark.parametrize("reply", [V1, V2, V2_WITH_TOKEN])
def test_delivery_agrees_with_the_librarys_metadata(reply: str) -> None:
    msg = Msg(None, subject="fq.job.default.j1.submitted", reply=reply)  # type: ignore[arg-type]
    meta = msg.metadata

    delivery = NatsDelivery.of(msg)

    assert (delivery.seq, delivery.deliveries) == (meta.sequence.stream, meta.num_delivered)
    assert (delivery.seq, delivery.deliveries) == (1042, 3)
    assert delivery.stored_at == datetime(2025, 11, 28, 8, 0, 0, 123456, tzinfo=UTC)
    assert abs(delivery.stored_at - meta.timestamp) <= timedelta(microseconds=1)


NOT_DELIVERIES = ["", "_INBOX.abc", "$JS.ACK.too.short", "$JS.ACK.a.b.c.d.e.f.g.h"]


@pytest.mark.parametrize("reply", NOT_DELIVERIES)
def test_a_message_that_is_no_jetstream_delivery_is_refused(reply: str) -> None:
    msg = Msg(None, subject="x", reply=reply)  # type: ignore[arg-type]
    with pytest.raises(NatsError):
        NatsDelivery.of(msg)
