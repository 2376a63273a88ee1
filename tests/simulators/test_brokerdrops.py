"""The broker's drop count after a flat-out run (simulators/brokerdrops.py), on a real
Mosquitto whose queue per subscriber is small."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.localbroker import LocalBroker
from simulators.brokerdrops import DropWatch
from tests.support import run_cli

QUEUED = 5
WAIT_S = 10.0


class SmallQueueBroker(LocalBroker):
    def config_text(self) -> str:
        return (
            super()
            .config_text()
            .replace("max_queued_messages 1000000", f"max_queued_messages {QUEUED}")
        )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    with SmallQueueBroker(tmp_path) as running:
        yield running


def offline_subscriber(broker: LocalBroker, topic: str) -> None:
    """A persistent session subscribed at QoS 1 that went away: the broker queues its
    messages, up to its limit, and drops the rest."""
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gone", clean_session=False)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe(topic, qos=1)
    assert subscribed.wait(WAIT_S), "no SUBACK"
    client.disconnect()
    client.loop_stop()


def test_the_watch_counts_what_the_broker_dropped_during_the_run(broker: LocalBroker) -> None:
    offline_subscriber(broker, "t/#")
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2)
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    try:
        with DropWatch(broker.host, broker.port) as watch:
            assert watch.wait_started()
            for i in range(20):
                publisher.publish("t/x", str(i), qos=1).wait_for_publish(WAIT_S)
            assert watch.dropped(WAIT_S) == 20 - QUEUED
    finally:
        publisher.disconnect()
        publisher.loop_stop()


def cmapss_file(path: Path, engines: int, cycles: int) -> Path:
    rows = [
        " ".join([str(unit), str(cycle), "0.0", "0.0", "100.0"] + [f"{1.5 + s}" for s in range(21)])
        for unit in range(1, engines + 1)
        for cycle in range(1, cycles + 1)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_flat_out_replay_the_broker_dropped_from_fails_with_one_clear_line(
    broker: LocalBroker, tmp_path: Path
) -> None:
    offline_subscriber(broker, "edgewatch/plant/#")
    data = cmapss_file(tmp_path / "train.txt", engines=2, cycles=20)
    result = run_cli(
        "simulate", "replay", str(data), "--format", "cmapss", "--as-fast-as-possible",
        "--broker", f"mqtt://{broker.host}:{broker.port}", "--site", "plant",
        cwd=tmp_path, timeout_s=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert "the broker dropped 35 messages" in result.stderr
    assert "--rate" in result.stderr


def test_a_broker_without_sys_gives_no_count(tmp_path: Path) -> None:
    # The embedded broker has no $SYS: nothing follows the SUBACK, so no count (and
    # the flat-out run ends with a note rather than a claim either way).
    with (
        LocalBroker(tmp_path, choice="embedded") as plain,
        DropWatch(plain.host, plain.port) as watch,
    ):
        assert not watch.wait_started(WAIT_S)
        assert watch.dropped(WAIT_S) is None
