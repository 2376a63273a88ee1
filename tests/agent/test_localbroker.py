"""The private Mosquitto of the demo refuses the packets the agent would refuse."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.domain import max_packet_bytes
from agent.localbroker import LocalBroker
from agent.settings import IngestSettings

TIMEOUT_S = 10.0
MAX_PAYLOAD = 1024
TOPIC = "edgewatch/plant/pump-1/telemetry"


class Client:
    """A paho 3.1.1 client whose connection changes and deliveries land in queues."""

    def __init__(self, broker: LocalBroker, client_id: str) -> None:
        self.messages: queue.Queue[bytes] = queue.Queue()
        self.events: queue.Queue[str] = queue.Queue()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311
        )
        self.client.on_message = lambda _c, _u, msg: self.messages.put(bytes(msg.payload))
        self.client.on_connect = lambda *_: self.events.put("connected")
        self.client.on_subscribe = lambda *_: self.events.put("subscribed")
        self.client.on_publish = lambda *_: self.events.put("published")
        self.client.on_disconnect = lambda *_: self.events.put("disconnected")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.next_event() == "connected"

    def next_event(self) -> str:
        return self.events.get(timeout=TIMEOUT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    with LocalBroker(tmp_path, max_payload_bytes=MAX_PAYLOAD) as running:
        yield running


def test_a_publisher_over_the_agents_packet_limit_is_disconnected(broker: LocalBroker) -> None:
    subscriber = Client(broker, "subscriber")
    publisher = Client(broker, "publisher")
    try:
        subscriber.client.subscribe(TOPIC, qos=1)
        assert subscriber.next_event() == "subscribed"
        # Over max_payload_bytes but within the header headroom: the broker forwards it
        # and the agent's decoder refuses it as too_large.
        just_over = b"y" * (MAX_PAYLOAD + 1)
        publisher.client.publish(TOPIC, just_over, qos=1)
        assert publisher.next_event() == "published"
        publisher.client.publish(TOPIC, b"x" * max_packet_bytes(MAX_PAYLOAD), qos=1)
        assert publisher.next_event() == "disconnected"
        # Published after the broker dropped the oversized one: the subscriber's
        # deliveries up to it show whether that one was forwarded.
        marker = Client(broker, "marker")
        marker.client.publish(TOPIC, b"marker", qos=1)
        assert marker.next_event() == "published"
        marker.close()
        received = [subscriber.messages.get(timeout=TIMEOUT_S) for _ in range(2)]
        assert received == [just_over, b"marker"]
    finally:
        publisher.close()
        subscriber.close()


def test_the_default_limit_is_the_agents_default(tmp_path: Path) -> None:
    default = IngestSettings.model_validate({}).max_payload_bytes
    config = LocalBroker(tmp_path).config_text().splitlines()
    assert f"max_packet_size {max_packet_bytes(default)}" in config
