"""The manual-ack adapter against a real Mosquitto: unacked means redelivered."""

from __future__ import annotations

import asyncio

import aiomqtt
from aiomqtt.client import ProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.domain import MessageRef
from agent.ingest.acks import ManualAcks
from tests.agent.ingest.helpers import WAIT_S, next_message, unique
from tests.support import Broker

SESSION_EXPIRY_S = 300


def persistent_client(broker: Broker, client_id: str) -> aiomqtt.Client:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=client_id,
        protocol=ProtocolVersion.V5,
        clean_start=False,
        properties=properties,
    )


def ref_of(message: aiomqtt.Message, session: int) -> MessageRef:
    return MessageRef(message.mid, message.qos, session)


async def test_unacked_message_is_redelivered_and_acked_one_is_not(
    mqtt_broker: Broker,
) -> None:
    client_id = unique("acks")
    topic = unique("acks-topic")
    async with asyncio.timeout(WAIT_S):
        first = persistent_client(mqtt_broker, client_id)
        acks = ManualAcks(first, session=1)
        async with first, aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as sender:
            await first.subscribe(topic, qos=1)
            await sender.publish(topic, b"acked", qos=1)
            await sender.publish(topic, b"not acked", qos=1)
            acked = await next_message(first)
            unacked = await next_message(first)
            assert (acked.payload, unacked.payload) == (b"acked", b"not acked")
            # A ref from an older connection must not ack whatever now has its id.
            assert acks.ack([MessageRef(unacked.mid, 1, session=0)]) == 0
            assert acks.stale == 1
            assert acks.ack([ref_of(acked, 1), MessageRef(0, 0, 1)]) == 1

        second = persistent_client(mqtt_broker, client_id)
        acks = ManualAcks(second, session=2)
        async with second, aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as sender:
            # The broker resends in-flight messages first; the marker then proves
            # nothing else was coming.
            await sender.publish(topic, b"marker", qos=1)
            seen: list[aiomqtt.Message] = []
            while not seen or seen[-1].payload != b"marker":
                seen.append(await next_message(second))
            assert [m.payload for m in seen] == [b"not acked", b"marker"]
            assert acks.ack(ref_of(m, 2) for m in seen) == 2
