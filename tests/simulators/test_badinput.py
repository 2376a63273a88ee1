"""Bad input on purpose: every recorded message has exactly its one defect, and no other
message has any; a reference validator written from the agent's rules checks both."""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from pathlib import Path

import pytest

from agent.domain import RejectReason
from agent.errors import PayloadError
from agent.ingest.topics import TopicMatcher
from simulators.badinput import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    BadInputInjector,
    BadKind,
    parse_kinds,
    read_records,
    write_records,
)
from simulators.fleet import FleetConfig, stream_fleet
from simulators.payloads import DEFAULT_TOPIC_TEMPLATE
from simulators.pump import SENSORS
from simulators.stream import Pacing
from tests.simulators.conftest import ListSink

SITE = "plant-a"
START_TS = 1_767_225_600.0
MAX_FUTURE_S = 300.0
MAX_PAST_S = 30 * 86_400.0
REORDER_SAMPLES = 4
NAME_MAX_CHARS = 128


class ReferenceValidator:
    """The agent's ingest rules, reduced to what the simulator promises to exercise."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.seen: dict[str, dict[float, dict[str, float]]] = {}
        self.latest: dict[str, float] = {}

    def check(self, topic: str, payload: bytes) -> RejectReason | None:
        parts = topic.split("/")
        if len(parts) != 4 or parts[0] != "edgewatch" or parts[1] != SITE:
            return RejectReason.UNKNOWN_TOPIC
        asset = parts[2]
        if (
            len(asset) > NAME_MAX_CHARS
            or asset != asset.strip()
            or any(unicodedata.category(c) in ("Cc", "Cf") for c in asset)
        ):
            return RejectReason.BAD_ASSET_NAME
        if len(payload) > DEFAULT_MAX_PAYLOAD_BYTES:
            return RejectReason.TOO_LARGE
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return RejectReason.INVALID_UTF8
        try:
            doc = json.loads(text)
        except ValueError:
            return RejectReason.INVALID_JSON
        if not isinstance(doc, dict) or not isinstance(doc.get("values"), dict):
            return RejectReason.SCHEMA
        ts, values = doc["ts"], doc["values"]
        batch = isinstance(ts, list)
        stamps = ts if batch else [ts]
        columns = values if batch else {k: [v] for k, v in values.items()}
        if not all(isinstance(t, float | int) for t in stamps):
            return RejectReason.SCHEMA
        for col in columns.values():
            if not isinstance(col, list) or not all(
                isinstance(v, float | int) and not isinstance(v, bool) for v in col
            ):
                return RejectReason.SCHEMA
        if any(not math.isfinite(v) for col in columns.values() for v in col):
            return RejectReason.NON_FINITE
        if not stamps:
            return RejectReason.EMPTY_BATCH
        if any(len(col) != len(stamps) for col in columns.values()):
            return RejectReason.BATCH_MISMATCH
        if set(SENSORS) - set(columns):
            return RejectReason.MISSING_SENSOR
        now = self.latest.get(asset, stamps[0])  # the gateway clock follows the data
        for t in stamps:
            if t > now + MAX_FUTURE_S + self.period_s * len(stamps):
                return RejectReason.TS_FUTURE
            if t < now - MAX_PAST_S:
                return RejectReason.TS_PAST
        seen = self.seen.setdefault(asset, {})
        for i, t in enumerate(stamps):
            reading = {k: col[i] for k, col in columns.items()}
            if t in seen:
                # An exact repeat is a QoS 1 redelivery, only a conflicting one is bad.
                if seen[t] == reading:
                    continue
                return RejectReason.DUPLICATE
            if asset in self.latest and t < self.latest[asset] - REORDER_SAMPLES * self.period_s:
                return RejectReason.OUT_OF_ORDER
        for i, t in enumerate(stamps):
            seen[t] = {k: col[i] for k, col in columns.items()}
        self.latest[asset] = max(self.latest.get(asset, -math.inf), *stamps)
        return None


def _run(
    rate: float, batch: int, kinds: tuple[BadKind, ...] = tuple(BadKind)
) -> tuple[ListSink, BadInputInjector]:
    sink = ListSink()
    injector = BadInputInjector(
        rate, 3, kinds=kinds, topic_template=DEFAULT_TOPIC_TEMPLATE, site=SITE
    )
    stream_fleet(
        FleetConfig(
            assets=6,
            rate_hz=1.0,
            duration_s=1200,
            seed=3,
            start_ts=START_TS,
            batch=batch,
            sensor_fault_fraction=0.5,
        ),
        sink,
        site=SITE,
        pacing=Pacing.fast(),
        bad=injector,
    )
    return sink, injector


@pytest.mark.parametrize("batch", [1, 5])
def test_record_names_exactly_the_bad_messages(batch: int) -> None:
    sink, injector = _run(0.1, batch)
    records = {r.seq: r for r in injector.records}
    validator = ReferenceValidator(period_s=1.0)
    assert [seq for seq, *_ in sink.sent] == list(range(len(sink.sent)))
    for seq, topic, payload, readings in sink.sent:
        verdict = validator.check(topic, payload)
        record = records.get(seq)
        if record is None:
            assert verdict is None, (seq, topic, payload[:200])
            assert readings == batch or readings < batch
        else:
            assert verdict == RejectReason(record.reason), (record, payload[:200])
            assert record.topic == topic
            assert record.payload_sha256 == hashlib.sha256(payload).hexdigest()
            assert record.payload_bytes == len(payload)
            assert readings == 0
    # The agent keeps one dead letter per topic and payload (a redelivery is no news).
    assert len({(r.topic, r.payload_sha256) for r in records.values()}) == len(records)
    share = len(records) / len(sink.sent)
    assert 0.07 < share < 0.13, share
    assert {r.kind for r in records.values()} == {k.value for k in BadKind}


def test_bad_asset_names_are_refused_by_the_agents_topic_matcher() -> None:
    _sink, injector = _run(0.3, 1, (BadKind.BAD_ASSET_NAME,))
    matcher = TopicMatcher(DEFAULT_TOPIC_TEMPLATE, SITE)
    assert {r.detail for r in injector.records} == {
        "200 characters",
        "trailing space",
        "right-to-left override",
    }
    for record in injector.records:
        with pytest.raises(PayloadError) as refused:
            matcher.asset_of(record.topic)
        assert refused.value.reason == RejectReason.BAD_ASSET_NAME == record.reason
        assert record.topic.split("/")[2] == record.asset
        # Names a broker forwards: no control character, wildcard or empty level.
        assert not any(unicodedata.category(c) == "Cc" or c in "+#" for c in record.topic)
        assert all(record.topic.split("/"))


def test_non_finite_uses_python_json_tokens() -> None:
    sink, injector = _run(0.5, 1, (BadKind.NON_FINITE,))
    by_seq = {seq: payload for seq, _t, payload, _r in sink.sent}
    tokens = {r.detail.split("=")[1] for r in injector.records}
    assert tokens == {"NaN", "Infinity", "-Infinity"}
    for r in injector.records:
        assert r.detail.split("=")[1].encode() in by_seq[r.seq]


def test_same_seed_same_bad_messages() -> None:
    a, ia = _run(0.05, 1)
    b, ib = _run(0.05, 1)
    assert ia.records == ib.records
    assert [p for *_x, p, _r in a.sent] == [p for *_x, p, _r in b.sent]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_record_round_trips(tmp_path: Path, suffix: str) -> None:
    _sink, injector = _run(0.1, 1)
    path = write_records(tmp_path / f"bad{suffix}", injector.records)
    assert read_records(path) == injector.records


def test_parse_kinds() -> None:
    assert parse_kinds("all") == tuple(BadKind)
    assert parse_kinds("non-finite, duplicate") == (BadKind.NON_FINITE, BadKind.DUPLICATE)
    with pytest.raises(ValueError, match="unknown bad-input kind"):
        parse_kinds("nonsense")
    # Every reason the agent still gives has a bad input that provokes it, but for
    # too_many_assets: a flood of assets, not one message, provokes that one; and the
    # Sparkplug reasons, which JSON payloads cannot provoke (their own tests do).
    retired = {RejectReason.UNKNOWN_SENSOR.value}
    flood = {RejectReason.TOO_MANY_ASSETS.value}
    sparkplug = {RejectReason.INVALID_PROTOBUF.value, RejectReason.NO_BIRTH.value}
    assert {k.value for k in BadKind} == (
        {r.value for r in RejectReason} - retired - flood - sparkplug
    )
