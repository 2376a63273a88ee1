"""MqttLink against real Mosquitto brokers: sessions, reconnects, birth, Will, close."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from pathlib import Path

import aiomqtt
import pytest

from agent.domain import MessageRef
from agent.ingest.acks import BufferedSocket
from agent.ingest.link import (
    PACKET_HEADROOM_BYTES,
    MqttLink,
    RawMessage,
    is_loopback,
    max_packet_bytes,
)
from agent.localbroker import LocalBroker
from agent.metrics import Metrics
from tests.agent.ingest.helpers import WAIT_S, body, make_settings, next_message, observer, unique
from tests.support import Broker


async def publish(broker: Broker, topic: str, payload: bytes, qos: int = 1) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(topic, payload, qos=qos)


async def next_raw(link: MqttLink) -> RawMessage:
    async for message in link.messages():
        return message
    raise AssertionError("link closed")


def status_topic(site: str, agent: str = "gw") -> str:
    return f"edgewatch/{site}/{agent}/status"


async def test_receives_acks_and_publishes_birth(mqtt_broker: Broker) -> None:
    site = unique("site")
    settings = make_settings(mqtt_broker, site=site)
    metrics = Metrics()
    async with asyncio.timeout(WAIT_S), observer(mqtt_broker, status_topic(site)) as watch:
        async with MqttLink(settings, metrics) as link:
            assert await link.wait_connected()
            birth = body(await next_message(watch))
            assert birth["state"] == "online"
            assert (birth["site"], birth["agent"]) == (site, "gw")
            assert birth["client_id"] == settings.mqtt_client_id
            assert link.protocol == "5"
            assert metrics.broker_connected
            assert metrics.broker_connects == 1

            topic = f"edgewatch/{site}/pump-1/telemetry"
            await publish(mqtt_broker, topic, b"hello", qos=1)
            message = await next_raw(link)
            assert (message.topic, message.payload, message.qos) == (topic, b"hello", 1)
            assert message.ref is not None
            assert message.ref.session == link.session == 1
            assert link.ack([message.ref, None]) == 1
            assert link.ack([MessageRef(message.ref.mid, 1, session=0)]) == 0
            assert (metrics.acks_sent, metrics.acks_dropped_stale) == (1, 1)

            await publish(mqtt_broker, topic, b"qos0", qos=0)
            message = await next_raw(link)
            assert (message.payload, message.ref) == (b"qos0", None)

            assert await link.publish(f"{site}/out", b"x", qos=1)
        # A clean close replaces the retained birth with "offline" and no Will follows.
        goodbye = body(await next_message(watch))
        assert (goodbye["state"], goodbye["reason"]) == ("offline", "shutdown")
        assert not metrics.broker_connected
    async with asyncio.timeout(WAIT_S), observer(mqtt_broker, status_topic(site)) as late:
        retained = await next_message(late)
        assert retained.retain
        assert body(retained)["reason"] == "shutdown"


async def test_unacked_messages_come_back_to_the_next_link(mqtt_broker: Broker) -> None:
    site = unique("site")
    settings = make_settings(mqtt_broker, site=site)
    topic = f"edgewatch/{site}/pump-1/telemetry"
    async with asyncio.timeout(WAIT_S):
        async with MqttLink(settings, Metrics()) as link:
            assert await link.wait_connected()
            await publish(mqtt_broker, topic, b"one")
            assert (await next_raw(link)).payload == b"one"  # never acked
        # Published while the agent is away: the persistent session keeps it.
        await publish(mqtt_broker, topic, b"two")
        async with MqttLink(settings, Metrics()) as link:
            first = await next_raw(link)
            second = await next_raw(link)
            assert [first.payload, second.payload] == [b"one", b"two"]
            assert link.ack([first.ref, second.ref]) == 2


async def test_reconnects_by_itself_after_a_broker_restart(private_broker: Broker) -> None:
    site = unique("site")
    settings = make_settings(private_broker, site=site)
    metrics = Metrics()
    topic = f"edgewatch/{site}/pump-1/telemetry"
    async with asyncio.timeout(3 * WAIT_S), MqttLink(settings, metrics) as link:
        assert await link.wait_connected()
        await publish(private_broker, topic, b"before")
        before = await next_raw(link)
        assert before.payload == b"before"

        private_broker.stop()
        assert await link.wait_for_state(connected=False)
        assert not await link.publish("x/y", b"lost", timeout_s=0.1)
        private_broker.start()
        assert await link.wait_connected()

        assert link.session == 2
        assert metrics.broker_connects == 2
        assert metrics.broker_disconnects == 1
        # The old connection's message id means nothing now: dropped, not sent.
        assert link.ack([before.ref]) == 0
        assert metrics.acks_dropped_stale == 1
        await publish(private_broker, topic, b"after")
        after = await next_raw(link)
        assert after.payload == b"after"
        assert after.ref is not None
        assert after.ref.session == 2
        assert link.ack([after.ref]) == 1


async def test_last_will_says_offline_when_the_connection_dies(mqtt_broker: Broker) -> None:
    site = unique("site")
    settings = make_settings(mqtt_broker, site=site)
    async with (
        asyncio.timeout(WAIT_S),
        observer(mqtt_broker, status_topic(site)) as watch,
        MqttLink(settings, Metrics()) as link,
    ):
        assert await link.wait_connected()
        assert body(await next_message(watch))["state"] == "online"
        # Cut the TCP connection without DISCONNECT, as a crash or cable pull would.
        conn = link._conn
        assert conn is not None
        sock = conn.client._client.socket()
        assert isinstance(sock, BufferedSocket)  # reads are buffered (agent/ingest/acks.py)
        sock.shutdown(socket.SHUT_RDWR)

        will = await next_message(watch)
        assert will.retain is False  # live delivery; the broker also retains it
        assert body(will)["state"] == "offline"
        assert body(will)["reason"] == "connection lost"
        # ... and the link comes back by itself with a fresh birth message.
        assert body(await next_message(watch))["state"] == "online"
        assert await link.wait_connected()
        assert link.session == 2


async def test_broker_down_at_start_is_retried_and_logged_once(
    private_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.ingest")
    private_broker.stop()
    settings = make_settings(private_broker, site=unique("site"), reconnect_max_s=0.05)
    async with asyncio.timeout(3 * WAIT_S), MqttLink(settings, Metrics()) as link:
        assert not await link.wait_connected(timeout_s=0.5)
        assert not await link.publish("x/y", b"z", timeout_s=0.05)
        private_broker.start()
        assert await link.wait_connected()
    events = [r.getMessage() for r in caplog.records if r.name == "agent.ingest.link"]
    assert events.count("broker unreachable, retrying") == 1
    assert events.count("broker connected") == 1
    assert len(events) <= 4  # unreachable, maybe "still down" once, connected


async def test_close_is_prompt_when_the_broker_never_came(private_broker: Broker) -> None:
    private_broker.stop()
    settings = make_settings(private_broker, site=unique("site"))
    link = MqttLink(settings, Metrics())
    task = asyncio.create_task(link.run())
    async with asyncio.timeout(WAIT_S):
        assert not await link.wait_connected(timeout_s=0.2)
        await link.close()
        await task
        assert not await link.publish("x/y", b"z", timeout_s=1)
        assert [m async for m in link.messages()] == []


async def test_mqtt_311_session(mqtt_broker: Broker) -> None:
    site = unique("site")
    settings = make_settings(mqtt_broker, site=site, protocol="3.1.1")
    topic = f"edgewatch/{site}/pump-1/telemetry"
    async with asyncio.timeout(WAIT_S):
        async with MqttLink(settings, Metrics()) as link:
            assert await link.wait_connected()
            assert link.protocol == "3.1.1"
        await publish(mqtt_broker, topic, b"while away")
        async with MqttLink(settings, Metrics()) as link:
            message = await next_raw(link)
            assert message.payload == b"while away"
            assert link.ack([message.ref]) == 1


class Mqtt311OnlyProxy:
    """Stands in for an MQTT 3.1.1-only broker: refuses MQTT 5 CONNECTs, relays the rest."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.refused = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        header = await reader.readexactly(1)
        length, scale = 0, 1
        while True:
            byte = await reader.readexactly(1)
            header += byte
            length += (byte[0] & 0x7F) * scale
            scale *= 128
            if not byte[0] & 0x80:
                break
        connect = await reader.readexactly(length)
        if connect[6] == 5:  # protocol level after the "MQTT" name
            self.refused += 1
            writer.write(b"\x20\x02\x00\x01")  # CONNACK: unacceptable protocol version
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(self.broker.host, self.broker.port)
        self._writers.append(up_writer)
        up_writer.write(header + connect)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._copy(source, sink))
            self._tasks.add(task)

    @staticmethod
    async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        sink.close()


async def test_auto_protocol_falls_back_to_311(
    mqtt_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.ingest")
    site = unique("site")
    topic = f"edgewatch/{site}/pump-1/telemetry"
    proxy = Mqtt311OnlyProxy(mqtt_broker)
    async with asyncio.timeout(WAIT_S), proxy as port:
        settings = make_settings(mqtt_broker, site=site, port=port)
        assert settings.mqtt.protocol == "auto"
        async with MqttLink(settings, Metrics()) as link:
            assert await link.wait_connected()
            assert link.protocol == "3.1.1"
            assert proxy.refused == 1
            await publish(mqtt_broker, topic, b"via 3.1.1")
            message = await next_raw(link)
            assert message.payload == b"via 3.1.1"
            assert link.ack([message.ref]) == 1
    events = [r.getMessage() for r in caplog.records if r.name == "agent.ingest.link"]
    assert "broker refuses MQTT 5, using 3.1.1" in events
    assert "broker unreachable, retrying" not in events


async def test_client_id_takeover_backs_off_and_logs_once(
    mqtt_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.ingest")
    settings = make_settings(mqtt_broker, site=unique("site"), reconnect_max_s=0.2)
    first_metrics = Metrics()
    async with (
        asyncio.timeout(3 * WAIT_S),
        # A takeover during subscribe is only noticed at the operation timeout.
        MqttLink(settings, first_metrics, connect_timeout_s=1) as first,
        MqttLink(settings, Metrics(), connect_timeout_s=1) as second,
    ):
        # Two gateways with one client id take the session from each other in turns.
        for _ in range(3):
            assert await first.wait_connected()
            assert await first.wait_for_state(connected=False)
        assert second.session >= 1
    events = [r.getMessage() for r in caplog.records if r.name == "agent.ingest.link"]
    assert first_metrics.broker_disconnects >= 3
    # Once per link, not once per round.
    assert 1 <= events.count("broker connection lost soon after connecting") <= 2
    assert len(events) <= 12


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_broker_drops_messages_over_the_maximum_packet_size(
    mqtt_broker: Broker, protocol: str
) -> None:
    site = unique("site")
    max_payload = 1024
    # Mosquitto 2.0.11 keeps each QoS 1 message it dropped for us in flight until the
    # next connection (measured): Receive Maximum of them would stall delivery, which
    # is why docs/operations.md has the broker refuse them at the door as well.
    settings = make_settings(
        mqtt_broker,
        site=site,
        protocol=protocol,
        receive_maximum=20,
        ingest={"max_payload_bytes": max_payload},
    )
    topic = f"edgewatch/{site}/pump-1/telemetry"
    oversized = b"x" * max_packet_bytes(max_payload)
    # Above max_payload_bytes but within the header headroom: the broker sends it and
    # the decoder refuses it as too_large, as it does any too-large payload.
    just_over = b"y" * (max_payload + 1)
    async with asyncio.timeout(WAIT_S), MqttLink(settings, Metrics()) as link:
        assert await link.wait_connected()
        async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as device:
            for _ in range(5):
                await device.publish(topic, oversized, qos=1)
            await device.publish(topic, just_over, qos=1)
            await device.publish(topic, b"small", qos=1)
        received: list[bytes] = []
        # One publisher, one topic, QoS 1: the broker keeps the order, so whatever
        # it forwarded of the oversized messages comes before "small".
        async for message in link.messages():
            link.ack([message.ref])
            received.append(message.payload)
            if message.payload == b"small":
                break
        assert link.connected and link.session == 1
    if protocol == "5":
        assert received == [just_over, b"small"]
    else:
        # MQTT 3.1.1 cannot ask for a limit: the decoder is the only guard there.
        assert received == [oversized] * 5 + [just_over, b"small"]


def test_maximum_packet_size_follows_max_payload_bytes() -> None:
    assert max_packet_bytes(65536) == 65536 + PACKET_HEADROOM_BYTES
    assert max_packet_bytes(10**12) == 268_435_455  # the most MQTT can frame


def _non_loopback_address() -> str | None:
    # A UDP "connect" only picks the route and the source address; nothing is sent.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


PLAINTEXT_WARNING = "broker password sent without TLS"


async def test_password_in_plaintext_to_another_host_is_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    caplog.set_level(logging.INFO, logger="agent.ingest")
    with LocalBroker(tmp_path, host=address) as broker:
        settings = make_settings(broker, site=unique("site"), username="u", password="hunter2")
        async with asyncio.timeout(WAIT_S), MqttLink(settings, Metrics()) as link:
            assert await link.wait_connected()
            broker.stop()
            assert await link.wait_for_state(connected=False)
            broker.start()
            assert await link.wait_connected()
            assert link.session == 2
    warnings = [r for r in caplog.records if r.getMessage() == PLAINTEXT_WARNING]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "hunter2" not in caplog.text


async def test_password_in_plaintext_to_loopback_is_not_warned(
    mqtt_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.ingest")
    settings = make_settings(mqtt_broker, site=unique("site"), username="u", password="hunter2")
    async with asyncio.timeout(WAIT_S), MqttLink(settings, Metrics()) as link:
        assert await link.wait_connected()
    assert PLAINTEXT_WARNING not in caplog.text


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("10.0.0.5", False),
        ("broker.plant.local", False),
        ("localhost.evil.example", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
