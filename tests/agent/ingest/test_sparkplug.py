"""Sparkplug B ingest: births and aliases, data to readings, sequence gaps, deaths, refusals."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import sparkplug as sp
from agent.domain import Event, Inbound, RejectReason
from agent.errors import PayloadError
from agent.ingest.decode import DecodeLimits
from agent.ingest.link import RawMessage
from agent.ingest.sparkplug import Rebirth, SparkplugDecoder, SparkplugSubscriber
from agent.ingest.topics import TopicMatcher
from agent.metrics import Metrics
from agent.settings import SparkplugSettings

NOW_MS = 1_790_000_000_000
GROUP = "plant"
NODE = "gw-1"
ALIASES = {"flow_m3_h": 1, "temp_c": 2}


def decoder(**settings: object) -> SparkplugDecoder:
    return SparkplugDecoder(
        SparkplugSettings.model_validate({"group_id": GROUP, **settings}),
        "site",
        DecodeLimits(),
    )


def t(kind: sp.MessageType, device: str | None = None, node: str = NODE) -> str:
    return sp.topic(GROUP, kind, node, device)


def nbirth(seq: int = 0, bdseq: int = 7) -> bytes:
    return sp.birth_payload(NOW_MS, seq, {}, {}, bdseq=bdseq)


def dbirth(seq: int = 1) -> bytes:
    return sp.birth_payload(NOW_MS, seq, {"flow_m3_h": 100.0, "temp_c": 40.0}, ALIASES)


def born(d: SparkplugDecoder, device: str = "pump-1") -> None:
    assert d.decode(t(sp.MessageType.NBIRTH), nbirth(), NOW_MS) == ()
    assert d.decode(t(sp.MessageType.DBIRTH, device), dbirth(), NOW_MS) == ()
    d.effects.clear()


def test_data_by_alias_becomes_readings_of_the_device() -> None:
    d = decoder()
    born(d)
    samples = [
        (NOW_MS + 1000, {"flow_m3_h": 101.5, "temp_c": 41.0}),
        (NOW_MS + 2000, {"temp_c": 42.0}),
    ]
    readings = d.decode(
        t(sp.MessageType.DDATA, "pump-1"), sp.data_payload(2, samples, ALIASES), NOW_MS
    )
    # Report by exception: a metric not sent keeps its value, every reading is whole.
    assert [(r.asset, r.ts_ms, r.values) for r in readings] == [
        ("pump-1", NOW_MS + 1000, {"flow_m3_h": 101.5, "temp_c": 41.0}),
        ("pump-1", NOW_MS + 2000, {"flow_m3_h": 101.5, "temp_c": 42.0}),
    ]
    assert readings[0].site == "site"
    assert d.effects == []


def test_metric_types_and_names_without_alias() -> None:
    d = decoder()
    birth = sp.Payload(timestamp=NOW_MS, seq=1)
    for name, datatype, value in [
        ("i8", sp.INT8, -5),
        ("i64", sp.INT64, -(2**40)),
        ("u32", sp.UINT32, 4_000_000_000),
        ("f", sp.FLOAT, 1.5),
        ("on", sp.BOOLEAN, True),
    ]:
        sp.set_value(birth.metrics.add(name=name), datatype, value)
    birth.metrics.add(name="label", datatype=12, string_value="not a sensor")
    d.decode(t(sp.MessageType.NBIRTH), nbirth(), NOW_MS)
    d.decode(t(sp.MessageType.DBIRTH, "m"), birth.SerializeToString(), NOW_MS)
    data = sp.Payload(timestamp=NOW_MS + 5, seq=2)
    sp.set_value(data.metrics.add(name="i8"), sp.INT8, -6)
    data.metrics.add(name="label", string_value="ignored")
    (reading,) = d.decode(t(sp.MessageType.DDATA, "m"), data.SerializeToString(), NOW_MS)
    assert reading.ts_ms == NOW_MS + 5
    assert reading.values == {"i8": -6.0, "i64": -(2.0**40), "u32": 4e9, "f": 1.5, "on": 1.0}


def test_node_data_is_the_nodes_asset_without_control_metrics() -> None:
    d = decoder(node_asset="{group}.{node}")
    payload = sp.Payload(timestamp=NOW_MS, seq=0)
    sp.set_value(payload.metrics.add(name=sp.BDSEQ_METRIC), sp.INT64, 3)
    sp.set_value(payload.metrics.add(name=sp.REBIRTH_METRIC), sp.BOOLEAN, False)
    sp.set_value(payload.metrics.add(name="cpu_temp_c", alias=9), sp.DOUBLE, 50.0)
    d.decode(t(sp.MessageType.NBIRTH), payload.SerializeToString(), NOW_MS)
    data = sp.data_payload(1, [(NOW_MS + 1, {"cpu_temp_c": 51.0})], {"cpu_temp_c": 9})
    (reading,) = d.decode(t(sp.MessageType.NDATA), data, NOW_MS)
    assert (reading.asset, reading.values) == ("plant.gw-1", {"cpu_temp_c": 51.0})


def test_device_asset_template_and_rename() -> None:
    d = SparkplugDecoder(
        SparkplugSettings.model_validate({"group_id": GROUP, "device_asset": "{node}.{device}"}),
        "site",
        DecodeLimits(),
        renames=lambda asset: {"temp_c": "casing_temp_c"} if asset == "gw-1.p" else None,
    )
    born(d, "p")
    (reading,) = d.decode(
        t(sp.MessageType.DDATA, "p"),
        sp.data_payload(2, [(NOW_MS, {"temp_c": 1.0})], ALIASES),
        NOW_MS,
    )
    assert (reading.asset, reading.values) == ("gw-1.p", {"flow_m3_h": 100.0, "casing_temp_c": 1.0})


def test_data_before_birth_is_a_dead_letter_and_asks_for_rebirth_once() -> None:
    d = decoder(rebirth_interval_s=10)
    data = sp.data_payload(5, [(NOW_MS, {"temp_c": 1.0})], ALIASES)
    with pytest.raises(PayloadError) as caught:
        d.decode(t(sp.MessageType.DDATA, "pump-1"), data, NOW_MS)
    assert caught.value.reason == RejectReason.NO_BIRTH
    rebirth, event = d.effects
    assert rebirth == Rebirth(NODE, f"spBv1.0/{GROUP}/NCMD/{NODE}")
    assert isinstance(event, Event) and event.kind == "sparkplug_rebirth_requested"
    d.effects.clear()
    # Within the interval: refused again, but the node is not asked again.
    with pytest.raises(PayloadError):
        d.decode(t(sp.MessageType.DDATA, "pump-1"), data, NOW_MS + 5000)
    assert d.effects == []
    assert d.counts.rebirths_held_back == 1
    with pytest.raises(PayloadError):
        d.decode(t(sp.MessageType.DDATA, "pump-1"), data, NOW_MS + 10_000)
    assert [type(e) for e in d.effects] == [Rebirth, Event]


def test_device_without_dbirth_and_unknown_alias_ask_for_rebirth() -> None:
    d = decoder()
    born(d)
    with pytest.raises(PayloadError) as caught:
        d.decode(
            t(sp.MessageType.DDATA, "pump-2"),
            sp.data_payload(2, [(NOW_MS, {"temp_c": 1.0})], ALIASES),
            NOW_MS,
        )
    assert caught.value.reason == RejectReason.NO_BIRTH
    assert isinstance(d.effects[0], Rebirth)
    d = decoder()
    born(d)
    with pytest.raises(PayloadError) as caught:
        d.decode(
            t(sp.MessageType.DDATA, "pump-1"),
            sp.data_payload(2, [(NOW_MS, {"x": 1.0})], {"x": 99}),
            NOW_MS,
        )
    assert caught.value.reason == RejectReason.NO_BIRTH
    assert "alias 99" in caught.value.detail
    assert d.asset == "pump-1"


def test_sequence_gap_reads_the_data_and_asks_for_rebirth() -> None:
    d = decoder()
    born(d)
    topic = t(sp.MessageType.DDATA, "pump-1")
    assert d.decode(topic, sp.data_payload(2, [(NOW_MS, {"temp_c": 1.0})], ALIASES), NOW_MS)
    assert d.effects == []
    readings = d.decode(topic, sp.data_payload(6, [(NOW_MS + 1, {"temp_c": 2.0})], ALIASES), NOW_MS)
    assert len(readings) == 1
    rebirth, event = d.effects
    assert isinstance(rebirth, Rebirth) and isinstance(event, Event)
    assert event.detail is not None
    assert (event.detail["expected"], event.detail["seq"], event.detail["missed"]) == (3, 6, 3)
    assert (d.counts.seq_gaps, d.counts.messages_missed) == (1, 3)
    # A rebirth starts the sequence over.
    d.effects.clear()
    born(d)
    d.decode(topic, sp.data_payload(2, [(NOW_MS + 2, {"temp_c": 3.0})], ALIASES), NOW_MS)
    assert d.effects == []


def test_sequence_wraps_at_256() -> None:
    d = decoder()
    d.decode(t(sp.MessageType.NBIRTH), nbirth(seq=254), NOW_MS)
    d.decode(t(sp.MessageType.DBIRTH, "pump-1"), dbirth(seq=255), NOW_MS)
    d.effects.clear()
    for i, seq in enumerate((0, 1, 2)):
        d.decode(
            t(sp.MessageType.DDATA, "pump-1"),
            sp.data_payload(seq, [(NOW_MS + i, {"temp_c": 1.0})], ALIASES),
            NOW_MS,
        )
    assert d.counts.seq_gaps == 0
    assert d.effects == []


def test_deaths_put_assets_offline() -> None:
    d = decoder()
    born(d, "pump-1")
    d.decode(t(sp.MessageType.DBIRTH, "pump-2"), dbirth(seq=2), NOW_MS)
    d.decode(t(sp.MessageType.DDEATH, "pump-2"), sp.device_death_payload(NOW_MS, 3), NOW_MS)
    (offline,) = d.effects
    assert isinstance(offline, Event)
    assert (offline.kind, offline.asset) == ("asset_offline", "pump-2")
    d.effects.clear()
    # The Will of an earlier session (another bdSeq) changes nothing.
    d.decode(t(sp.MessageType.NDEATH), sp.death_payload(NOW_MS, 6), NOW_MS)
    assert d.effects == []
    d.decode(t(sp.MessageType.NDEATH), sp.death_payload(NOW_MS, 7), NOW_MS)
    kinds = [(e.kind, e.asset) for e in d.effects if isinstance(e, Event)]
    assert kinds == [("sparkplug_node_offline", None), ("asset_offline", "pump-1")]
    with pytest.raises(PayloadError) as caught:
        d.decode(
            t(sp.MessageType.DDATA, "pump-1"),
            sp.data_payload(4, [(NOW_MS, {"temp_c": 1.0})], ALIASES),
            NOW_MS,
        )
    assert caught.value.reason == RejectReason.NO_BIRTH


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("spBv1.0/other/DDATA/gw-1/pump-1", b"", RejectReason.UNKNOWN_TOPIC),
        ("spBv1.0/plant/XDATA/gw-1", b"", RejectReason.UNKNOWN_TOPIC),
        ("spBv1.0/plant/DDATA/gw-1", b"", RejectReason.UNKNOWN_TOPIC),
        ("spBv1.0/plant/NBIRTH/gw-1", b"\xff\xff\xff", RejectReason.INVALID_PROTOBUF),
        ("spBv1.0/plant/NBIRTH/gw-1", b"x" * 70000, RejectReason.TOO_LARGE),
        ("spBv1.0/plant/NBIRTH/gw-1", sp.Payload().SerializeToString(), RejectReason.SCHEMA),
    ],
)
def test_refusals(topic: str, payload: bytes, reason: RejectReason) -> None:
    with pytest.raises(PayloadError) as caught:
        decoder().decode(topic, payload, NOW_MS)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("value", "ts_ms", "reason"),
    [
        (math.nan, NOW_MS, RejectReason.NON_FINITE),
        (1.0, NOW_MS + 3_600_000, RejectReason.TS_FUTURE),
        (1.0, NOW_MS - 40 * 86_400_000, RejectReason.TS_PAST),
    ],
)
def test_bad_values_and_times(value: float, ts_ms: int, reason: RejectReason) -> None:
    d = decoder()
    born(d)
    with pytest.raises(PayloadError) as caught:
        d.decode(
            t(sp.MessageType.DDATA, "pump-1"),
            sp.data_payload(2, [(ts_ms, {"temp_c": value})], ALIASES),
            NOW_MS,
        )
    assert caught.value.reason == reason


def test_commands_and_state_are_not_data() -> None:
    d = decoder()
    assert d.decode(t(sp.MessageType.NCMD), sp.rebirth_command(NOW_MS), NOW_MS) == ()
    assert d.decode(f"spBv1.0/{GROUP}/STATE/host", b"ONLINE", NOW_MS) == ()


@settings(max_examples=300, deadline=None)
@given(
    topic_tail=st.sampled_from(["NBIRTH/gw-1", "DBIRTH/gw-1/d", "DDATA/gw-1/d", "NDEATH/gw-1"]),
    payload=st.binary(max_size=300),
)
def test_any_bytes_give_readings_or_a_reason(topic_tail: str, payload: bytes) -> None:
    d = decoder()
    born(d, "d")
    try:
        d.decode(f"spBv1.0/{GROUP}/{topic_tail}", payload, NOW_MS)
    except PayloadError as exc:
        assert exc.reason in set(RejectReason)


async def test_subscriber_turns_messages_into_inbound_and_effects() -> None:
    out: asyncio.Queue[Inbound] = asyncio.Queue()
    metrics = Metrics()
    subscriber = SparkplugSubscriber(
        link=None,  # type: ignore[arg-type]  # handle() alone needs no link
        matcher=TopicMatcher("edgewatch/{site}/{asset}/telemetry", "site"),
        limits=DecodeLimits(),
        out=out,
        metrics=metrics,
        dead_letter_max_bytes=16,
        settings=SparkplugSettings.model_validate({"group_id": GROUP}),
    )

    def message(topic: str, payload: bytes) -> RawMessage:
        return RawMessage(topic, payload, 0, False, None, NOW_MS)

    early = subscriber.handle(
        message(
            t(sp.MessageType.DDATA, "pump-1"),
            sp.data_payload(0, [(NOW_MS, {"temp_c": 1.0})], ALIASES),
        )
    )
    assert early.rejected is not None and early.rejected.reason == RejectReason.NO_BIRTH
    assert metrics.dead_letters["no_birth"] == 1
    subscriber.handle(message(t(sp.MessageType.NBIRTH), nbirth()))
    subscriber.handle(message(t(sp.MessageType.DBIRTH, "pump-1"), dbirth()))
    data = subscriber.handle(
        message(
            t(sp.MessageType.DDATA, "pump-1"),
            sp.data_payload(2, [(NOW_MS, {"temp_c": 2.0})], ALIASES),
        )
    )
    assert [r.values for r in data.readings] == [{"flow_m3_h": 100.0, "temp_c": 2.0}]

    published: list[tuple[str, bytes]] = []
    recorded: list[Event] = []

    async def publish(topic: str, payload: bytes) -> bool:
        published.append((topic, payload))
        return True

    both = asyncio.Event()  # the rebirth request's event and the node's birth

    async def record(event: Event) -> None:
        recorded.append(event)
        if len(recorded) == 2:
            both.set()

    task = asyncio.create_task(subscriber.run_effects(publish, record))
    async with asyncio.timeout(5):
        await both.wait()
    task.cancel()
    ((topic, payload),) = published
    assert topic == f"spBv1.0/{GROUP}/NCMD/{NODE}"
    assert sp.is_rebirth_command(sp.decode(payload))
    assert [e.kind for e in recorded] == ["sparkplug_rebirth_requested", "sparkplug_node_online"]
