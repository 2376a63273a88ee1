"""The ingest stage end to end on a real broker, and its resilience to any input."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Mapping

import aiomqtt
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.domain import Inbound, RejectReason
from agent.ingest.decode import DecodeLimits
from agent.ingest.link import MqttLink, RawMessage
from agent.ingest.subscriber import Subscriber
from agent.ingest.topics import TopicMatcher
from agent.metrics import Metrics
from agent.profiles import Profiles
from agent.settings import ModelSettings
from tests.agent.ingest.helpers import WAIT_S, make_settings, unique
from tests.support import Broker

NOW_MS = 1_790_000_000_000
TEMPLATE = "edgewatch/{site}/{asset}/telemetry"


async def test_good_and_bad_payloads_become_inbound(mqtt_broker: Broker) -> None:
    site = unique("site")
    config = make_settings(mqtt_broker, site=site)
    metrics = Metrics()
    out: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=100)
    limits = DecodeLimits.from_settings(config.ingest)
    now_s = time.time()
    sent: list[tuple[str, bytes, int]] = [
        ("pump-1", orjson.dumps({"ts": now_s, "values": {"temp_c": 40.0}}), 1),
        ("pump-2", orjson.dumps({"ts": [now_s - 1, now_s], "values": {"t": [1, 2]}}), 1),
        ("pump-1", b"{not json", 1),
        ("pump-1", b'{"ts": 1, "values": {"x": NaN}}', 1),
        ("pump-3", orjson.dumps({"ts": now_s, "values": {"t": 1}}), 0),
    ]
    async with asyncio.timeout(WAIT_S), MqttLink(config, metrics) as link:
        subscriber = Subscriber(link, link.matcher, limits, out, metrics, dead_letter_max_bytes=4)
        task = asyncio.create_task(subscriber.run())
        assert await link.wait_connected()
        async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as device:
            for asset, payload, qos in sent:
                await device.publish(f"edgewatch/{site}/{asset}/telemetry", payload, qos=qos)
            await device.publish("edgewatch/elsewhere/pump-9/telemetry", b"{}", qos=1)
        got = [await out.get() for _ in range(len(sent) + 1)]
        subscriber.stop()
        await task

    single, batch, bad_json, nan, qos0, foreign = got
    assert [r.values for r in single.readings] == [{"temp_c": 40.0}]
    assert single.readings[0].asset == "pump-1"
    assert single.readings[0].site == site
    assert [r.values["t"] for r in batch.readings] == [1.0, 2.0]
    assert bad_json.rejected is not None
    assert bad_json.rejected.reason is RejectReason.INVALID_JSON
    assert bad_json.rejected.payload == b"{not"  # truncated to dead_letter_max_bytes
    assert bad_json.rejected.payload_size == 9
    assert bad_json.rejected.asset == "pump-1"
    assert nan.rejected is not None
    assert nan.rejected.reason is RejectReason.NON_FINITE
    assert qos0.ref is None
    assert qos0.readings
    assert foreign.rejected is not None
    assert foreign.rejected.reason is RejectReason.UNKNOWN_TOPIC
    assert foreign.rejected.asset is None
    assert all(i.ref is not None for i in got if i is not qos0)
    assert all(i.received_ms > 0 for i in got)
    assert metrics.messages_received == 6
    assert metrics.dead_letters == {"invalid_json": 1, "non_finite": 1, "unknown_topic": 1}
    assert all(type(key) is str for key in metrics.dead_letters)
    assert orjson.loads(orjson.dumps(metrics.snapshot()))["dead_letters_total"] == 3


class FakeSource:
    """Feeds prepared messages; then waits like a quiet broker."""

    def __init__(self, messages: list[RawMessage]) -> None:
        self.queue: asyncio.Queue[RawMessage] = asyncio.Queue()
        self.drained = asyncio.Event()
        for message in messages:
            self.queue.put_nowait(message)

    async def messages(self) -> AsyncGenerator[RawMessage, None]:
        while True:
            message = await self.queue.get()
            if self.queue.empty():
                self.drained.set()
            yield message


def raw(topic: str, payload: bytes) -> RawMessage:
    return RawMessage(topic, payload, 0, False, None, NOW_MS)


async def test_stop_while_waiting_ends_run_cleanly() -> None:
    out: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=1)
    source = FakeSource([raw("edgewatch/s/a/telemetry", b"{}")])
    subscriber = Subscriber(
        source, TopicMatcher(TEMPLATE, "s"), DecodeLimits(), out, Metrics(), 100
    )
    task = asyncio.create_task(subscriber.run())
    async with asyncio.timeout(WAIT_S):
        first = await out.get()
        assert first.rejected is not None
        # run() is now waiting for the next message: stop() ends it without error.
        await asyncio.sleep(0)
        subscriber.stop()
        await task
    assert task.exception() is None


async def test_stop_while_blocked_on_a_full_queue_keeps_the_message() -> None:
    out: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=1)
    messages = [raw("edgewatch/s/a/telemetry", b"1"), raw("edgewatch/s/a/telemetry", b"2")]
    source = FakeSource(messages)
    subscriber = Subscriber(
        source, TopicMatcher(TEMPLATE, "s"), DecodeLimits(), out, Metrics(), 100
    )
    task = asyncio.create_task(subscriber.run())
    async with asyncio.timeout(WAIT_S):
        # Both taken: the first is on the queue, the second blocked in put.
        await source.drained.wait()
        subscriber.stop()
        assert not task.done()
        first = await out.get()
        await task
        second = out.get_nowait()
    assert first.rejected is not None
    assert second.rejected is not None
    assert (first.rejected.payload, second.rejected.payload) == (b"1", b"2")


async def test_cancel_propagates() -> None:
    subscriber = Subscriber(
        FakeSource([]), TopicMatcher(TEMPLATE, "s"), DecodeLimits(), asyncio.Queue(), Metrics(), 1
    )
    task = asyncio.create_task(subscriber.run())
    await asyncio.sleep(0)
    task.cancel()
    async with asyncio.timeout(WAIT_S):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.cancelled()


topics = st.one_of(
    st.text(max_size=60),
    st.builds(
        "edgewatch/{}/{}/telemetry".format,
        st.sampled_from(["s", "t", ""]),
        st.text(max_size=10),
    ),
)


@settings(max_examples=300, deadline=None)
@given(topic=topics, payload=st.binary(max_size=200) | st.just(b'{"ts":1,"values":{"a":1}}'))
def test_any_message_becomes_one_inbound(topic: str, payload: bytes) -> None:
    metrics = Metrics()
    subscriber = Subscriber(
        FakeSource([]),
        TopicMatcher(TEMPLATE, "s"),
        DecodeLimits(max_past_ms=10**15),
        asyncio.Queue(),
        metrics,
        16,
    )
    inbound = subscriber.handle(RawMessage(topic, payload, 1, False, None, NOW_MS))
    assert (inbound.rejected is None) == bool(inbound.readings)
    assert metrics.messages_received == 1
    assert sum(metrics.dead_letters.values()) == (inbound.rejected is not None)
    if inbound.rejected is not None:
        assert len(inbound.rejected.payload) <= 16


async def test_hostile_names_and_numbers_are_dead_letters(
    mqtt_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.ingest")
    site = unique("site")
    config = make_settings(mqtt_broker, site=site)
    metrics = Metrics()
    out: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=100)
    good = orjson.dumps({"ts": time.time(), "values": {"t": 1.0}})
    huge_ts = b'{"ts": ' + b"9" * 4300 + b', "values": {"t": 1}}'
    # Mosquitto itself refuses topics with C0/C1 control characters (newlines): the
    # topic matcher's tests cover those for brokers that do not.
    sent: list[tuple[str, bytes]] = [
        ("pump-1\u2028ERROR forged log line", good),
        ("pump-1\u202e", good),
        ("p" * 129, good),
        (" pump-1", good),
        ("pump-1", huge_ts),
        ("pump-1", b'{"ts": 1, "values": {"\\ud800": 1}}'),
        ("pump-1", good),
    ]
    async with asyncio.timeout(WAIT_S), MqttLink(config, metrics) as link:
        subscriber = Subscriber(
            link, link.matcher, DecodeLimits.from_settings(config.ingest), out, metrics, 64
        )
        task = asyncio.create_task(subscriber.run())
        assert await link.wait_connected()
        async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as device:
            for asset, payload in sent:
                await device.publish(f"edgewatch/{site}/{asset}/telemetry", payload, qos=1)
        got = [await out.get() for _ in sent]
        subscriber.stop()
        await task
    *rejected, last = got
    reasons = [i.rejected.reason if i.rejected else None for i in rejected]
    assert reasons == [RejectReason.BAD_ASSET_NAME] * 4 + [
        RejectReason.NON_FINITE,
        RejectReason.SCHEMA,
    ]
    assert all(i.rejected is not None and i.rejected.asset is None for i in rejected[:4])
    assert [r.asset for r in last.readings] == ["pump-1"]  # still running, still decoding
    assert metrics.dead_letters == {"bad_asset_name": 4, "non_finite": 1, "schema": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class _BrokenProfiles(Profiles):
    """Profiles whose lookup fails: stands in for a bug anywhere in decoding."""

    def renames(self, asset: str) -> Mapping[str, str] | None:
        raise RuntimeError("bug")


def test_a_decoder_bug_is_a_dead_letter_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent.ingest")
    metrics = Metrics()
    subscriber = Subscriber(
        FakeSource([]),
        TopicMatcher(TEMPLATE, "s"),
        DecodeLimits(),
        asyncio.Queue(),
        metrics,
        16,
        profiles=_BrokenProfiles([], ModelSettings.model_validate({})),
    )
    for _ in range(50):
        inbound = subscriber.handle(
            RawMessage("edgewatch/s/pump-1/telemetry", b"{}", 1, False, None, NOW_MS)
        )
        assert inbound.rejected is not None
        assert inbound.rejected.reason is RejectReason.SCHEMA
    assert metrics.dead_letters == {"schema": 50}
    failures = [r for r in caplog.records if r.getMessage() == "decoder failed on a message"]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
