"""Fixtures for the simulator tests: a subscriber that records what reached the broker."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import REPO, Broker

SUBSCRIBE_TIMEOUT_S = 10.0
ARRIVAL_TIMEOUT_S = 30.0
CMAPSS_FD001 = REPO.parent / "shared" / "datasets" / "cmapss-fd001" / "train_FD001.txt"


@dataclass
class Subscriber:
    """Records every message on ``topic``; ``wait_for(n)`` blocks until n arrived."""

    client: mqtt.Client
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    _cv: threading.Condition = field(default_factory=threading.Condition)

    def on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cv:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cv.notify_all()

    def wait_for(self, count: int, timeout_s: float) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: len(self.messages) >= count, timeout_s)


SubscriberFactory = Callable[[Broker, str], Subscriber]


@pytest.fixture
def subscribe() -> Iterator[SubscriberFactory]:
    """``subscribe(broker, topic)``: a QoS 1 subscriber, ready once the broker acks it."""
    made: list[Subscriber] = []

    def factory(broker: Broker, topic: str = "edgewatch/#") -> Subscriber:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{len(made)}")
        sub = Subscriber(client)
        subscribed = threading.Event()
        client.on_message = sub.on_message
        client.on_subscribe = lambda *_args: subscribed.set()
        client.on_connect = lambda c, *_args: c.subscribe(topic, qos=1)
        client.connect(broker.host, broker.port)
        client.loop_start()
        made.append(sub)
        assert subscribed.wait(SUBSCRIBE_TIMEOUT_S), "subscription not acknowledged"
        return sub

    yield factory
    for sub in made:
        sub.client.disconnect()
        sub.client.loop_stop()


@dataclass
class ListSink:
    """A message sink that keeps everything, for tests without a broker."""

    sent: list[tuple[int, str, bytes, int]] = field(default_factory=list)

    def publish(self, seq: int, topic: str, payload: bytes, readings: int = 1) -> bool:
        self.sent.append((seq, topic, payload, readings))
        return True

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        return stop is not None and stop.wait(seconds)


def small_cmapss(tmp_path: Path) -> Path:
    """The first 12 cycles of units 1-3 of FD001: 36 rows."""
    rows = [
        line
        for line in CMAPSS_FD001.read_text().splitlines()
        if line.split()[0] in {"1", "2", "3"} and int(line.split()[1]) <= 12
    ]
    path = tmp_path / "small_FD001.txt"
    path.write_text("\n".join(rows) + "\n")
    return path
