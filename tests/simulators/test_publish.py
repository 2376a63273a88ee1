"""Publishing to a real Mosquitto: completeness at QoS 1, replay content, bad input,
connection loss."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent.errors import BrokerError
from simulators.badinput import BadInputInjector, read_records
from simulators.fleet import FleetConfig, publish_fleet
from simulators.mqtt_wire import WirePublisher
from simulators.paho_publisher import PahoPublisher
from simulators.payloads import DEFAULT_TOPIC_TEMPLATE
from simulators.publisher import parse_broker_url
from simulators.replay import CMAPSS_COLUMNS, publish_replay, read_cmapss, read_csv
from simulators.stream import Pacing
from tests.simulators.conftest import ARRIVAL_TIMEOUT_S, SubscriberFactory, small_cmapss
from tests.support import Broker, free_port

Backend = type[WirePublisher] | type[PahoPublisher]
BACKENDS = pytest.mark.parametrize("backend", [WirePublisher, PahoPublisher], ids=["wire", "paho"])


@BACKENDS
def test_qos1_publish_of_70000_messages_arrives_complete(
    backend: Backend, mqtt_broker: Broker, subscribe: SubscriberFactory
) -> None:
    # More than 65,535: an unbounded paho publisher loses messages once mids wrap.
    total = 70_000
    prefix = f"bench/{backend.__name__}"
    sub = subscribe(mqtt_broker, f"{prefix}/#")
    with backend(mqtt_broker.host, mqtt_broker.port, qos=1) as pub:
        for seq in range(total):
            assert pub.publish(seq, f"{prefix}/{seq % 7}", b"%d" % seq)
    result = pub.result
    assert result.sent == total and result.not_sent == 0 and result.ok
    assert sub.wait_for(total, ARRIVAL_TIMEOUT_S), len(sub.messages)
    assert sorted(int(p) for _t, p in sub.messages) == list(range(total))


def test_cmapss_replay_reaches_broker_with_right_topics_and_payloads(
    mqtt_broker: Broker, subscribe: SubscriberFactory, tmp_path: Path
) -> None:
    src = small_cmapss(tmp_path)
    raw = np.loadtxt(src)
    series = read_cmapss(src, cycle_s=10.0)
    assert [s.asset for s in series] == ["engine-001", "engine-002", "engine-003"]
    sub = subscribe(mqtt_broker, "edgewatch/replay-site/#")
    start = 1_800_000_000.0
    report = publish_replay(
        series,
        host=mqtt_broker.host,
        port=mqtt_broker.port,
        site="replay-site",
        pacing=Pacing.fast(),
        start_ts=start,
        truth_path=tmp_path / "truth.parquet",
    )
    assert report.publish.sent == len(raw) and report.publish.ok
    assert sub.wait_for(len(raw), ARRIVAL_TIMEOUT_S)
    got: dict[tuple[str, float], dict[str, float]] = {}
    for topic, payload in sub.messages:
        doc = json.loads(payload)
        assert set(doc) == {"ts", "values"}
        got[(topic, doc["ts"])] = doc["values"]
    assert len(got) == len(raw)
    for row in raw:
        unit, cycle = int(row[0]), row[1]
        topic = f"edgewatch/replay-site/engine-{unit:03d}/telemetry"
        values = got[(topic, start + (cycle - 1) * 10.0)]
        assert list(values) == list(CMAPSS_COLUMNS[2:])
        assert np.array_equal(np.array(list(values.values())), row[2:])
    truth = pd.read_parquet(tmp_path / "truth.parquet")
    assert list(truth.columns) == ["asset", "ts", "seq", "cycle", "rul_cycles"]
    last = truth.groupby("asset")["rul_cycles"].min()
    assert (last == 0).all() and len(truth) == len(raw)


def test_csv_replay_keeps_labels_out_of_payloads(
    mqtt_broker: Broker, subscribe: SubscriberFactory, tmp_path: Path
) -> None:
    data = tmp_path / "csv"
    data.mkdir()
    for name in ("press-1", "press-2"):
        (data / f"{name}.csv").write_text(
            "time;temp_c;force_kn;label\n"
            + "".join(
                f"2024-05-01T00:00:{i:02d}Z;{20 + i};{1.5 * i};{int(i > 6)}\n" for i in range(10)
            )
        )
    series = read_csv(data, time_column="time", sep=";", label_columns=["label"])
    sub = subscribe(mqtt_broker, "edgewatch/csv-site/#")
    report = publish_replay(
        series,
        host=mqtt_broker.host,
        port=mqtt_broker.port,
        site="csv-site",
        pacing=Pacing.fast(),
        batch=4,
        truth_path=tmp_path / "truth.csv",
    )
    assert report.publish.ok and report.publish.readings_sent == 20
    assert sub.wait_for(report.publish.sent, ARRIVAL_TIMEOUT_S)
    topics = {t for t, _p in sub.messages}
    assert topics == {f"edgewatch/csv-site/press-{i}/telemetry" for i in (1, 2)}
    for _t, payload in sub.messages:
        doc = json.loads(payload)
        assert set(doc["values"]) == {"temp_c", "force_kn"}
        assert len(doc["ts"]) == len(doc["values"]["temp_c"])
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert truth["label"].sum() == 6


def test_bad_input_record_matches_what_the_broker_delivered(
    mqtt_broker: Broker, subscribe: SubscriberFactory, tmp_path: Path
) -> None:
    # Telemetry topics only: the session-wide broker holds other tests' retained
    # status and alert messages, which must not count as arrivals here.
    sub = subscribe(mqtt_broker, "edgewatch/+/+/telemetry")
    bad = BadInputInjector(0.05, 1, topic_template=DEFAULT_TOPIC_TEMPLATE, site="bad-site")
    report = publish_fleet(
        FleetConfig(assets=5, rate_hz=2.0, duration_s=300, seed=1),
        host=mqtt_broker.host,
        port=mqtt_broker.port,
        site="bad-site",
        pacing=Pacing.fast(),
        bad=bad,
        truth_path=tmp_path / "truth.parquet",
        bad_record_path=tmp_path / "bad.jsonl",
    )
    assert report.publish.ok
    assert sub.wait_for(report.publish.sent, ARRIVAL_TIMEOUT_S)
    records = read_records(tmp_path / "bad.jsonl")
    assert len(records) == report.stream.bad_messages > 0
    delivered = {(t, hashlib.sha256(p).hexdigest()) for t, p in sub.messages}
    for r in records:
        assert (r.topic, r.payload_sha256) in delivered
    truth = pd.read_parquet(tmp_path / "truth.parquet")
    assert len(truth) == report.stream.readings
    assert not set(truth["seq"]) & {r.seq for r in records}
    assert len(sub.messages) == report.stream.good_messages + len(records)


@BACKENDS
def test_reconnects_after_broker_restart_without_loss(
    backend: Backend, private_broker: Broker
) -> None:
    total = 3000
    restarted = threading.Event()
    with backend(private_broker.host, private_broker.port, qos=1, reconnect_timeout_s=20) as pub:
        for seq in range(total):
            if seq == total // 2:
                private_broker.stop()
                private_broker.start()
                restarted.set()
            assert pub.publish(seq, "restart/test", b"x")
    result = pub.result
    assert restarted.is_set()
    assert result.reconnects >= 1 and result.disconnects >= 1
    assert result.sent == total and result.ok, result.as_dict()


@BACKENDS
def test_gives_up_and_reports_what_was_not_sent(backend: Backend, private_broker: Broker) -> None:
    pub = backend(
        private_broker.host,
        private_broker.port,
        qos=1,
        reconnect_timeout_s=1.0,
        drain_timeout_s=5.0,
    )
    with pub:
        for seq in range(100):
            pub.publish(seq, "gone/test", b"x")
        assert pub.flush(10.0)
        private_broker.stop()
        refused = [seq for seq in range(100, 200) if not pub.publish(seq, "gone/test", b"x")]
    result = pub.result
    assert result.sent >= 100
    assert result.not_sent == 200 - result.sent > 0
    assert not result.ok and result.errors
    # Every message is accounted for: acknowledged, refused, or reported unacknowledged.
    assert len(refused) + len(result.unacked_seqs) == result.not_sent
    assert all(seq >= 100 for seq in [*refused, *result.unacked_seqs])


@BACKENDS
def test_unreachable_broker_is_a_broker_error(backend: Backend) -> None:
    with pytest.raises(BrokerError, match="cannot reach MQTT broker"):
        backend("127.0.0.1", free_port()).connect()


@BACKENDS
def test_qos0_counts_what_was_written(
    backend: Backend, mqtt_broker: Broker, subscribe: SubscriberFactory
) -> None:
    sub = subscribe(mqtt_broker, f"q0/{backend.__name__}")
    with backend(mqtt_broker.host, mqtt_broker.port, qos=0) as pub:
        for seq in range(500):
            pub.publish(seq, f"q0/{backend.__name__}", b"x", readings=2)
    assert pub.result.sent == 500 and pub.result.readings_sent == 1000
    assert sub.wait_for(500, ARRIVAL_TIMEOUT_S)


def test_parse_broker_url() -> None:
    assert parse_broker_url("mqtt://gw:1884") == ("gw", 1884)
    assert parse_broker_url("localhost") == ("localhost", 1883)
    assert parse_broker_url("tcp://10.0.0.2", default_port=1999) == ("10.0.0.2", 1999)
    with pytest.raises(BrokerError):
        parse_broker_url("mqtts://gw:8883")


def test_fleet_stops_and_reports_when_the_broker_goes_away(
    private_broker: Broker, tmp_path: Path
) -> None:
    def stop_broker_once(done: int, _total: int | None) -> None:
        if done and private_broker.process is not None:
            private_broker.stop()

    report = publish_fleet(
        FleetConfig(assets=3, rate_hz=1.0, duration_s=3600, seed=2),
        host=private_broker.host,
        port=private_broker.port,
        pacing=Pacing.fast(),
        reconnect_timeout_s=1.0,
        truth_path=tmp_path / "truth.parquet",
        on_progress=stop_broker_once,
    )
    pub, stream = report.publish, report.stream
    assert stream.stopped_early and stream.planned is not None
    assert stream.messages < stream.planned
    assert not pub.ok and any("gave up" in e for e in pub.errors)
    # Everything queued is either acknowledged or listed as not acknowledged.
    assert pub.sent + len(pub.unacked_seqs) + stream.refused == pub.attempted
    truth = pd.read_parquet(tmp_path / "truth.parquet")
    assert set(pub.unacked_seqs) <= set(truth["seq"])
