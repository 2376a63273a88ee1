"""CSV/C-MAPSS readers, pacing against the wall clock, keep-alive while idle."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agent.errors import DatasetError
from simulators.fleet import FleetConfig, stream_fleet
from simulators.mqtt_wire import WirePublisher
from simulators.replay import read_cmapss, read_csv, rebase
from simulators.stream import Pacing
from tests.support import Broker


def test_csv_asset_column_epoch_ms_and_missing_values(tmp_path: Path) -> None:
    src = tmp_path / "log.csv"
    src.write_text(
        "machine,t_ms,rpm,state\n"
        "b,1700000002000,12.5,run\n"
        "a,1700000001000,10.0,run\n"
        "a,1700000000000,11.0,idle\n"
        "b,1700000003000,,run\n"
        "b,1700000001000,13.0,run\n"
    )
    series = read_csv(src, time_column="t_ms", asset_column="machine", label_columns=["state"])
    assert [s.asset for s in series] == ["a", "b"]
    a, b = series
    assert a.ts.tolist() == [1_700_000_000.0, 1_700_000_001.0]
    assert list(a.values) == ["rpm"] and a.values["rpm"].tolist() == [11.0, 10.0]
    assert a.truth == {"state": ["idle", "run"]}
    # The row with a missing rpm is skipped, not published as NaN.
    assert b.ts.tolist() == [1_700_000_001.0, 1_700_000_002.0]
    shifted = rebase(series, 100.0)
    assert shifted[0].ts.tolist() == [100.0, 101.0] and shifted[1].ts.tolist() == [101.0, 102.0]


def test_csv_errors_are_dataset_errors(tmp_path: Path) -> None:
    src = tmp_path / "x.csv"
    src.write_text("a;b\n1;2\n")
    with pytest.raises(DatasetError, match="wrong --sep"):
        read_csv(src, time_column="a")
    with pytest.raises(DatasetError, match="not both"):
        read_csv(src, time_column="a", asset_column="b", asset_from_file=True)
    with pytest.raises(DatasetError, match="not found"):
        read_csv(tmp_path / "missing.csv", time_column="a")
    short = tmp_path / "short.txt"
    short.write_text("1 2 3\n")
    with pytest.raises(DatasetError, match="a C-MAPSS file has 26"):
        read_cmapss(short)


class ClockSink:
    """Records the wall clock at which each message was handed over."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []

    def publish(self, seq: int, topic: str, payload: bytes, readings: int = 1) -> bool:
        self.sent.append((time.time(), payload))
        return True

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        return (stop or threading.Event()).wait(seconds)


@pytest.mark.parametrize("pacing", [Pacing(speedup=300.0), Pacing.fast()], ids=["paced", "fast"])
def test_readings_are_never_stamped_ahead_of_the_wall_clock(pacing: Pacing) -> None:
    sink = ClockSink()
    config = FleetConfig(
        assets=2, rate_hz=1.0, duration_s=120.0, seed=1, fault_fraction=0, sensor_fault_fraction=0
    )
    stream_fleet(config, sink, pacing=pacing)
    assert len(sink.sent) == 2 * 121
    stamps = [json.loads(p)["ts"] for _w, p in sink.sent]
    # The agent rejects readings from the future (ingest.max_future_s).
    assert all(ts <= wall + 1e-3 for (wall, _p), ts in zip(sink.sent, stamps, strict=True))
    assert np.all(np.diff(stamps) >= 0)


def test_stop_event_ends_a_paced_stream_early() -> None:
    sink = ClockSink()
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    stats = stream_fleet(
        FleetConfig(assets=1, rate_hz=1.0, duration_s=3600.0, seed=1),
        sink,
        pacing=Pacing(speedup=1.0),
        stop=stop,
    )
    timer.join()
    assert stats.stopped_early and 0 < len(sink.sent) < 10


def test_wire_publisher_keeps_an_idle_connection_alive(mqtt_broker: Broker) -> None:
    with WirePublisher(mqtt_broker.host, mqtt_broker.port, keepalive_s=1) as pub:
        pub.publish(0, "idle/test", b"a")
        # Mosquitto drops a client silent for 1.5 keep-alive periods.
        assert not pub.wait(2.0)
        assert pub.publish(1, "idle/test", b"b")
    assert pub.result.ok and pub.result.sent == 2 and pub.result.disconnects == 0
