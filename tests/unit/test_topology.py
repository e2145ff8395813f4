"""The JetStream definitions (package data, linked from nats/jetstream/) and how settings shape
them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.log.topology import (
    definitions,
    load_consumer_definition,
    load_stream_definitions,
    worker_consumer_config,
)
from ferrisqueue.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_nats_jetstream_in_the_checkout_is_a_relative_link_to_the_package_data() -> None:
    # `nats stream add --config nats/jetstream/streams/FQ_EVENTS.json` (README) reads the
    # very files the services load.
    link = REPO / "nats" / "jetstream"

    assert link.is_symlink()
    assert not Path(os.readlink(link)).is_absolute()  # valid wherever the checkout is
    assert link.resolve() == REPO / "ferrisqueue" / "log" / "jetstream"
    assert Path(str(definitions())).resolve() == link.resolve()
    assert (link / "streams" / "FQ_EVENTS.json").is_file()


def test_a_folder_without_stream_definitions_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no JetStream stream definitions"):
        load_stream_definitions(tmp_path)


def test_event_stream_keeps_history() -> None:
    (stream,) = [s for s in load_stream_definitions() if s["name"] == EVENT_STREAM]

    assert stream["retention"] == "limits"  # never workqueue/interest: those delete history
    assert stream["subjects"] == ["fq.job.>"]
    assert stream["storage"] == "file"
    assert stream["deny_delete"] is True


def test_worker_consumer_of_another_queue_is_the_default_one_with_the_queue_swapped() -> None:
    settings = Settings(_env_file=None, ack_wait=12.5, max_deliver=7)  # type: ignore[call-arg]

    config = worker_consumer_config("emails", settings)

    default = load_consumer_definition(EVENT_STREAM, "fq-worker-default")
    assert config["durable_name"] == "fq-worker-emails"
    assert config["filter_subjects"] == [
        "fq.job.emails.*.submitted",
        "fq.job.emails.*.released",
        "fq.job.emails.*.redriven",
    ]
    assert config["ack_wait"] == 12_500_000_000
    assert config["max_deliver"] == 7
    assert config["ack_policy"] == default["ack_policy"] == "explicit"
    assert default["durable_name"] == "fq-worker-default"  # the template is not mutated


def test_projector_consumer_acks_all_and_never_gives_up() -> None:
    config = load_consumer_definition(EVENT_STREAM, "fq-projector")

    assert config["ack_policy"] == "all"
    assert config["max_deliver"] == -1
    assert config["filter_subject"] == "fq.job.>"


def test_a_queues_own_ack_wait_becomes_its_consumers_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FQ_QUEUES", '{"reports": {"ack_wait": 300}}')
    settings = Settings(_env_file=None, ack_wait=30)  # type: ignore[call-arg]

    assert worker_consumer_config("reports", settings)["ack_wait"] == 300 * 10**9
    assert worker_consumer_config("default", settings)["ack_wait"] == 30 * 10**9


@pytest.mark.parametrize(
    ("max_deliver", "expected"), [(1, [10]), (3, [10, 20, 40]), (50, [10, 20, 40, 80, 160, 320])]
)
def test_redeliveries_back_off_from_the_ack_wait(max_deliver: int, expected: list[int]) -> None:
    settings = Settings(_env_file=None, ack_wait=10, max_deliver=max_deliver)  # type: ignore[call-arg]

    config = worker_consumer_config("default", settings)

    assert config["backoff"] == [seconds * 10**9 for seconds in expected]
    assert config["backoff"][0] == config["ack_wait"]
    assert len(config["backoff"]) <= config["max_deliver"]  # the server's rule (error 10116)
