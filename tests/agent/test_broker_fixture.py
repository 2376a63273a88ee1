"""The test broker is a real Mosquitto that aiomqtt can talk to."""

from __future__ import annotations

import asyncio

import aiomqtt

from tests.support import Broker


async def test_publish_subscribe_round_trip(mqtt_broker: Broker) -> None:
    async with (
        aiomqtt.Client(mqtt_broker.host, mqtt_broker.port, identifier="t-sub") as sub,
        aiomqtt.Client(mqtt_broker.host, mqtt_broker.port, identifier="t-pub") as pub,
    ):
        await sub.subscribe("edgewatch/test/#", qos=1)
        await pub.publish("edgewatch/test/a", b'{"x": 1}', qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(sub.messages))
        assert message.payload == b'{"x": 1}'
        assert str(message.topic) == "edgewatch/test/a"
