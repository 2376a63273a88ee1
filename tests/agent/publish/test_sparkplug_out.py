"""The publisher against a real Mosquitto: births, DDATA, Rebirth, Will, coalescing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiomqtt
import pytest

from agent import sparkplug as sp
from agent.publish.sparkplug_out import SparkplugPublisher
from tests.support import Broker

Seen = list[tuple[sp.Topic, sp.Payload]]
_arrived = asyncio.Condition()


async def _until(seen: Seen, condition: Callable[[Seen], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s), _arrived:
        await _arrived.wait_for(lambda: condition(seen))


def _kinds(seen: Seen, kind: sp.MessageType) -> list[sp.Payload]:
    return [p for t, p in seen if t.kind is kind]


def test_offer_coalesces_per_asset_and_drops_the_oldest() -> None:
    publisher = SparkplugPublisher("127.0.0.1", 1, "g", "n", max_pending=2, bdseq=0)
    publisher.offer("a", {"anomaly_score": 0.1})
    publisher.offer("a", {"anomaly_score": 0.2, "alert_active": True})
    publisher.offer("b", {"anomaly_score": 0.3})
    publisher.offer("c", {"anomaly_score": 0.4})
    assert publisher.dropped == 1
    assert dict(publisher._pending) == {"b": {"anomaly_score": 0.3}, "c": {"anomaly_score": 0.4}}


async def test_births_data_rebirth_and_death(mqtt_broker: Broker) -> None:
    group = "pubtest"
    seen: Seen = []
    async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as watcher:
        await watcher.subscribe(sp.subscription(group), qos=1)

        async def watch() -> None:
            async for message in watcher.messages:
                assert isinstance(message.payload, bytes)
                async with _arrived:
                    seen.append((sp.parse_topic(str(message.topic)), sp.decode(message.payload)))
                    _arrived.notify_all()

        watching = asyncio.create_task(watch())
        publisher = SparkplugPublisher(mqtt_broker.host, mqtt_broker.port, group, "ew", bdseq=7)
        publisher.offer("pump-1", {"anomaly_score": 0.1, "alert_active": False})
        running = asyncio.create_task(publisher.run())
        await _until(seen, lambda s: len(_kinds(s, sp.MessageType.DBIRTH)) == 1)
        (nbirth,) = _kinds(seen, sp.MessageType.NBIRTH)
        assert sp.bdseq_of(nbirth) == 7
        publisher.offer("pump-1", {"anomaly_score": 0.9, "alert_active": True})
        await _until(seen, lambda s: bool(_kinds(s, sp.MessageType.DDATA)))
        (ddata,) = _kinds(seen, sp.MessageType.DDATA)
        assert sorted(m.HasField("boolean_value") for m in ddata.metrics) == [False, True]
        await watcher.publish(
            sp.topic(group, sp.MessageType.NCMD, "ew"), sp.rebirth_command(0), qos=0
        )
        await _until(seen, lambda s: len(_kinds(s, sp.MessageType.DBIRTH)) == 2)
        rebirth = _kinds(seen, sp.MessageType.DBIRTH)[1]
        values = {m.name: m for m in rebirth.metrics}
        assert values["anomaly_score"].double_value == 0.9 and values["alert_active"].boolean_value
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await _until(seen, lambda s: bool(_kinds(s, sp.MessageType.NDEATH)))
        assert sp.bdseq_of(_kinds(seen, sp.MessageType.NDEATH)[0]) == 7
        watching.cancel()
