"""The embedded broker the demo falls back to, driven by real paho clients over TCP."""

from __future__ import annotations

import queue
import socket
import struct
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent import localbroker
from agent.errors import BrokerError
from agent.localbroker import LocalBroker
from agent.minibroker import (
    CONNECT,
    DISCONNECT,
    SUBACK,
    SUBSCRIBE,
    Broker,
    BrokerLimits,
    Message,
    packet,
    topic_matches,
    valid_filter,
)

TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    with LocalBroker(tmp_path_factory.mktemp("minibroker"), choice="embedded") as running:
        assert running.kind == "embedded"
        yield running


class Client:
    """A paho 3.1.1 client whose deliveries and connection results land in queues."""

    def __init__(
        self, broker: LocalBroker, client_id: str, *, clean: bool = True, manual_ack: bool = False
    ) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connected: queue.Queue[tuple[bool, int]] = queue.Queue()
        self.subscribed: queue.Queue[int] = queue.Queue()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean,
            protocol=paho.MQTTv311,
            manual_ack=manual_ack,
        )
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_connect = lambda _c, _u, flags, rc, _p: self.connected.put(
            (flags.session_present, rc.value)
        )
        self.client.on_subscribe = lambda _c, _u, mid, _rc, _p: self.subscribed.put(mid)
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def wait_connected(self) -> tuple[bool, int]:
        result = self.connected.get(timeout=TIMEOUT_S)
        self.connected.put(result)  # later callers see the same CONNACK
        return result

    def subscribe(self, pattern: str, qos: int = 1) -> None:
        self.wait_connected()
        self.client.subscribe(pattern, qos)
        self.subscribed.get(timeout=TIMEOUT_S)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(TIMEOUT_S)

    def receive(self, n: int) -> list[paho.MQTTMessage]:
        return [self.messages.get(timeout=TIMEOUT_S) for _ in range(n)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def raw_connect(broker: LocalBroker, body: bytes) -> socket.socket:
    sock = socket.create_connection((broker.host, broker.port), timeout=TIMEOUT_S)
    sock.sendall(packet(CONNECT, body))
    return sock


def connect_body(client_id: str, *, level: int = 4, will: tuple[str, bytes] | None = None) -> bytes:
    def text(value: bytes) -> bytes:
        return struct.pack("!H", len(value)) + value

    flags = 2 | (4 | 8 if will else 0)  # clean session; will at QoS 1
    body = text(b"MQTT") + bytes([level, flags]) + struct.pack("!H", 30)
    if level == 5:
        body += b"\x00"  # no properties
    body += text(client_id.encode())
    if will:
        if level == 5:
            body += b"\x00"
        body += text(will[0].encode()) + text(will[1])
    return body


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "a/b", True),
        ("#", "$SYS/broker", False),
        ("+/broker", "$SYS/broker", False),
        ("$SYS/#", "$SYS/broker", True),
        ("a/b", "a/b/c", False),
        ("a/+", "a", False),
    ],
)
def test_topic_filters_match_as_the_standard_says(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


def test_malformed_filters_are_refused() -> None:
    assert valid_filter("edgewatch/+/+/telemetry")
    assert not valid_filter("a/#/b")
    assert not valid_filter("a/b+")
    assert not valid_filter("")


def test_wildcard_subscription_and_retained_messages(broker: LocalBroker) -> None:
    pub = Client(broker, "pub-retained")
    pub.wait_connected()
    pub.publish("alerts/pump-1", b"open", retain=True)
    pub.publish("alerts/pump-2", b"open", retain=True)
    pub.publish("alerts/pump-2", b"", retain=True)  # an empty retained payload clears it
    sub = Client(broker, "sub-retained")
    sub.subscribe("alerts/#")
    (retained,) = sub.receive(1)
    assert (retained.topic, retained.payload, retained.retain) == ("alerts/pump-1", b"open", True)
    sub.subscribe("site/+/telemetry")
    pub.publish("site/pump-1/telemetry", b"1")
    pub.publish("site/pump-1/other", b"2")
    pub.publish("alerts/pump-3", b"open", retain=True)
    got = sub.receive(2)
    # A message routed to an existing subscription is sent with the retain flag clear.
    assert [(m.topic, m.payload, m.retain, m.qos) for m in got] == [
        ("site/pump-1/telemetry", b"1", False, 1),
        ("alerts/pump-3", b"open", False, 1),
    ]
    assert sub.messages.empty()
    pub.close()
    sub.close()


def test_persistent_session_keeps_messages_and_resends_unacknowledged(
    broker: LocalBroker,
) -> None:
    agent = Client(broker, "agent-1", clean=False, manual_ack=True)
    assert agent.wait_connected() == (False, 0)
    agent.subscribe("plant/#")
    pub = Client(broker, "pub-session")
    pub.wait_connected()
    for i in range(5):
        pub.publish("plant/m", str(i).encode())
    first = agent.receive(5)
    for msg in first[:2]:
        agent.client.ack(msg.mid, msg.qos)
    agent.close()
    for i in range(5, 8):
        pub.publish("plant/m", str(i).encode())

    back = Client(broker, "agent-1", clean=False, manual_ack=True)
    assert back.wait_connected() == (True, 0)
    again = back.receive(6)
    # The three not acknowledged come again first (DUP), then what came while away.
    assert [m.payload for m in again] == [b"2", b"3", b"4", b"5", b"6", b"7"]
    assert [m.dup for m in again[:3]] == [True, True, True]
    for msg in again:
        back.client.ack(msg.mid, msg.qos)
    back.close()
    pub.close()


def test_last_will_is_published_when_a_client_vanishes(broker: LocalBroker) -> None:
    watcher = Client(broker, "watcher")
    watcher.subscribe("status/#")
    sock = raw_connect(broker, connect_body("doomed", will=("status/doomed", b"offline")))
    assert sock.recv(4) == b"\x20\x02\x00\x00"
    sock.close()  # no DISCONNECT: the will goes out
    (will,) = watcher.receive(1)
    assert (will.topic, will.payload) == ("status/doomed", b"offline")
    watcher.close()


def test_mqtt5_is_refused_with_unsupported_version(broker: LocalBroker) -> None:
    # The agent's link answers reason 0x84 by speaking 3.1.1.
    with raw_connect(broker, connect_body("v5", level=5)) as sock:
        assert sock.recv(5) == b"\x20\x03\x00\x84\x00"
    with raw_connect(broker, connect_body("v3", level=3)) as sock:
        assert sock.recv(4) == b"\x20\x02\x00\x01"


def test_garbage_closes_that_connection_only(broker: LocalBroker) -> None:
    for junk in (b"\xff" * 8, b"\x10\xff\xff\xff\xff\x7f", b"\x30\x05\x00"):
        with socket.create_connection((broker.host, broker.port), timeout=TIMEOUT_S) as sock:
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(16) == b""  # closed by the broker, nothing answered
    sub = Client(broker, "after-garbage")
    sub.subscribe("still/works")
    sub.publish("still/works", b"yes")
    assert sub.receive(1)[0].payload == b"yes"
    sub.close()
    assert broker.process is not None and broker.process.poll() is None


def test_auto_falls_back_to_the_embedded_broker_without_mosquitto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(localbroker, "find_mosquitto", lambda: None)
    with pytest.raises(BrokerError, match="mosquitto broker is not installed"):
        LocalBroker(tmp_path / "strict").start()
    with LocalBroker(tmp_path / "auto", choice="auto") as running:
        assert running.kind == "embedded"
        client = Client(running, "auto-check")
        client.subscribe("x")
        client.publish("x", b"1")
        assert client.receive(1)[0].payload == b"1"
        client.close()


def test_embedded_broker_logs_to_its_workdir(broker: LocalBroker) -> None:
    assert broker.log_path == Path(broker.workdir) / "minibroker.log"
    assert "listening on" in broker.log_path.read_text()


# ------------------------------------------------------------- slow clients, expiry

FLOOD_MESSAGES = 400
#: Large enough that the flood overruns any socket buffer of a client that never reads.
FLOOD_PAYLOAD = b"x" * 64 * 1024


def stuck_subscriber(broker: LocalBroker, client_id: str, pattern: str, qos: int) -> socket.socket:
    """A client that subscribes, reads its SUBACK and then never reads again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT_S)
    sock.connect((broker.host, broker.port))
    sock.sendall(packet(CONNECT, connect_body(client_id)))
    assert sock.recv(4) == b"\x20\x02\x00\x00"
    topic = pattern.encode()
    body = struct.pack("!H", 1) + struct.pack("!H", len(topic)) + topic + bytes([qos])
    sock.sendall(packet(SUBSCRIBE, body, flags=2))
    assert sock.recv(5) == bytes([SUBACK << 4, 3, 0, 1, qos])
    return sock


def wait_for_log(broker: LocalBroker, text: str) -> str:
    """The broker's log once it holds ``text`` (the broker is another process)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        log = broker.log_path.read_text()
        if text in log:
            return log
        time.sleep(0.05)  # polling a foreign process's file
    raise AssertionError(f"{text!r} not in {broker.log_path}:\n{broker.log_path.read_text()}")


def test_a_subscriber_that_never_reads_stalls_nobody(broker: LocalBroker) -> None:
    stuck = [stuck_subscriber(broker, f"stuck-q{q}", "flood/#", q) for q in (0, 1)]
    reader = Client(broker, "flood-reader")
    reader.subscribe("flood/#")
    pub = Client(broker, "flood-publisher")
    pub.wait_connected()
    for i in range(FLOOD_MESSAGES):
        # The broker acknowledges each publish only after routing it to every subscriber:
        # a broker that waits for the stuck clients' sockets never acknowledges.
        info = pub.client.publish("flood/m", FLOOD_PAYLOAD + str(i).encode(), qos=1)
        info.wait_for_publish(TIMEOUT_S)
        assert info.is_published(), f"publish {i} not acknowledged"
    got = reader.receive(FLOOD_MESSAGES)
    assert [m.payload[len(FLOOD_PAYLOAD) :] for m in got] == [
        str(i).encode() for i in range(FLOOD_MESSAGES)
    ]
    # What could not be sent to the QoS 0 subscriber was dropped and counted.
    wait_for_log(broker, "'stuck-q0': outgoing buffer full, 1 QoS 0 message dropped")
    for sock in stuck:
        sock.close()
    pub.close()
    reader.close()


def tuned_broker(tmp_path: Path, *options: str) -> LocalBroker:
    return LocalBroker(tmp_path, choice="embedded", embedded_options=options)


def test_a_returning_client_gets_the_newest_queued_messages(tmp_path: Path) -> None:
    with tuned_broker(tmp_path, "--max-queued", "10") as broker:
        returning_client_gets_the_newest(broker)


def returning_client_gets_the_newest(broker: LocalBroker) -> None:
    away = Client(broker, "away", clean=False)
    away.subscribe("away/#")
    away.close()
    pub = Client(broker, "away-publisher")
    pub.wait_connected()
    for i in range(20):
        pub.publish("away/m", str(i).encode())
    wait_for_log(broker, "'away': queue full, 10 QoS 1 messages dropped")
    back = Client(broker, "away", clean=False)
    assert back.wait_connected() == (True, 0)
    # The bound keeps the newest: the oldest ten were dropped.
    assert [m.payload for m in back.receive(10)] == [str(i).encode() for i in range(10, 20)]
    pub.publish("away/m", b"after")
    assert back.receive(1)[0].payload == b"after"
    back.close()
    pub.close()


def test_a_persistent_session_expires_when_its_client_stays_away(tmp_path: Path) -> None:
    with tuned_broker(tmp_path, "--session-expiry-s", "0.5") as broker:
        persistent_session_expires(broker)


def persistent_session_expires(broker: LocalBroker) -> None:
    gone = Client(broker, "gone", clean=False)
    gone.subscribe("gone/#")
    gone.close()
    wait_for_log(broker, "session 'gone' expired")
    pub = Client(broker, "gone-publisher")
    pub.wait_connected()
    pub.publish("gone/m", b"to nobody")
    back = Client(broker, "gone", clean=False)
    assert back.wait_connected() == (False, 0)  # no session present: subscriptions forgotten
    back.subscribe("gone/#")
    pub.publish("gone/m", b"after")
    assert back.receive(1)[0].payload == b"after"
    back.close()
    pub.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_session_expiry_follows_the_clock() -> None:
    import asyncio

    clock = FakeClock()
    broker = Broker(BrokerLimits(session_expiry_s=3600.0), clock=clock)
    server = await broker.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:

        async def session(client_id: str, *, disconnect: bool) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            body = connect_body(client_id)
            # clean session 0: the flags byte follows the 6-byte protocol name and level
            body = body[:7] + bytes([0]) + body[8:]
            writer.write(packet(CONNECT, body))
            connack = await asyncio.wait_for(reader.readexactly(4), TIMEOUT_S)
            topic = b"t/#"
            sub = struct.pack("!H", 1) + struct.pack("!H", len(topic)) + topic + b"\x01"
            writer.write(packet(SUBSCRIBE, sub, flags=2))
            await asyncio.wait_for(reader.readexactly(5), TIMEOUT_S)
            if disconnect:
                writer.write(packet(DISCONNECT, b""))
                # The broker closes the connection once the session is detached from it.
                assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""
            writer.close()
            return connack

        assert await session("p1", disconnect=True) == b"\x20\x02\x00\x00"
        for i in range(3):
            broker.route(Message("t/x", str(i).encode(), 1))
        assert len(broker.sessions["p1"].queue) == 3
        clock.now += 3599.0
        assert broker.expire_sessions() == []
        clock.now += 2.0
        assert broker.expire_sessions() == ["p1"]
        assert "p1" not in broker.sessions
        # Back after expiry: a new session, nothing present.
        assert await session("p1", disconnect=True) == b"\x20\x02\x00\x00"
        assert broker.sessions["p1"].queue == deque()
    finally:
        server.close()
        await server.wait_closed()
