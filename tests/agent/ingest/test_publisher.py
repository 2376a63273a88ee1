"""Alert and status publishing against a real broker."""

from __future__ import annotations

import asyncio

import orjson

from agent.domain import Alert, AlertKind, Severity
from agent.ingest.link import MqttLink
from agent.ingest.publisher import AlertPublisher, StatusReporter, alert_payload, publish_json
from agent.metrics import Metrics
from tests.agent.ingest.helpers import WAIT_S, body, make_settings, next_message, observer, unique
from tests.support import Broker

OPENED_MS = 1_790_000_000_250


def alert(asset: str, *, closed_ms: int | None = None, score: float = 3.5) -> Alert:
    return Alert(
        asset=asset,
        kind=AlertKind.ANOMALY,
        severity=Severity.WARNING,
        opened_ms=OPENED_MS,
        peak_score=4.0,
        last_score=score,
        closed_ms=closed_ms,
        rul_cycles=80.0,
        model_version="pump-v1",
        detail="vibration",
        last_update_ms=OPENED_MS + 1000,
    )


def test_alert_payload_fields() -> None:
    payload = alert_payload(alert("pump-1", closed_ms=OPENED_MS + 60_000), "plant1")
    assert payload["state"] == "closed"
    assert payload["opened_ts"] == OPENED_MS / 1000
    assert payload["opened_at"] == "2026-09-21T14:13:20.250Z"
    assert payload["closed_at"] == "2026-09-21T14:14:20.250Z"
    assert payload["updated_at"] == "2026-09-21T14:13:21.250Z"
    assert (payload["asset"], payload["kind"], payload["severity"]) == (
        "pump-1",
        "anomaly",
        "warning",
    )
    assert (payload["peak_score"], payload["last_score"], payload["rul"]) == (4.0, 3.5, 80.0)
    assert (payload["model_version"], payload["detail"]) == ("pump-v1", "vibration")
    assert alert_payload(alert("a"), "s")["closed_ts"] is None


def test_status_payloads() -> None:
    status = StatusReporter(site="s", agent="a", client_id="c", topic="edgewatch/s/a/status")
    assert orjson.loads(status.birth(session=3))["state"] == "online"
    assert orjson.loads(status.birth(session=3))["session"] == 3
    assert orjson.loads(status.will())["reason"] == "connection lost"
    health = orjson.loads(status.health(Metrics().snapshot(), queue="x"))
    assert (health["state"], health["queue"], health["messages_received"]) == ("online", "x", 0)


async def test_alerts_are_published_retained(mqtt_broker: Broker) -> None:
    site = unique("site")
    config = make_settings(mqtt_broker, site=site)
    inbox: asyncio.Queue[Alert] = asyncio.Queue()
    topic = f"edgewatch/{site}/pump-1/alerts"
    async with asyncio.timeout(WAIT_S), observer(mqtt_broker, topic) as watch:
        async with MqttLink(config, Metrics(), subscribe=False) as link:
            publisher = AlertPublisher(link, config.mqtt.alerts_topic, site, inbox)
            task = asyncio.create_task(publisher.run())
            await inbox.put(alert("pump-1"))
            live = body(await next_message(watch))
            assert (live["asset"], live["state"], live["site"]) == ("pump-1", "open", site)
            await inbox.put(alert("pump-1", closed_ms=OPENED_MS + 5000, score=0.5))
            assert body(await next_message(watch))["state"] == "closed"
            await inbox.join()  # what the runtime's drain waits on
            assert publisher.published == 2
            task.cancel()
        async with observer(mqtt_broker, topic) as late:
            retained = await next_message(late)
            assert retained.retain
            assert body(retained)["state"] == "closed"
            assert body(retained)["last_score"] == 0.5


async def test_alerts_wait_for_the_broker_and_newest_state_wins(private_broker: Broker) -> None:
    site = unique("site")
    private_broker.stop()
    config = make_settings(private_broker, site=site)
    inbox: asyncio.Queue[Alert] = asyncio.Queue(maxsize=2)
    async with asyncio.timeout(3 * WAIT_S), MqttLink(config, Metrics(), subscribe=False) as link:
        publisher = AlertPublisher(link, config.mqtt.alerts_topic, site, inbox)
        task = asyncio.create_task(publisher.run())
        # More alerts than the inbox holds: the publisher keeps draining while offline.
        for score in (1.0, 2.0, 3.0, 4.0):
            await inbox.put(alert("pump-1", score=score))
        await inbox.put(alert("pump-2"))
        assert publisher.published == 0
        private_broker.start()
        async with observer(private_broker, f"edgewatch/{site}/+/alerts") as watch:
            got = [body(await next_message(watch)) for _ in range(2)]
            await inbox.join()  # superseded states count as done
            assert publisher.pending == 0
        assert sorted((g["asset"], g["last_score"]) for g in got) == [
            ("pump-1", 4.0),
            ("pump-2", 3.5),
        ]
        task.cancel()


async def test_publish_json(mqtt_broker: Broker) -> None:
    topic = unique("json")
    async with asyncio.timeout(WAIT_S), observer(mqtt_broker, topic) as watch:
        config = make_settings(mqtt_broker, site=unique("site"))
        async with MqttLink(config, Metrics(), subscribe=False) as link:
            assert await publish_json(link, topic, {"a": 1})
            assert body(await next_message(watch)) == {"a": 1}
