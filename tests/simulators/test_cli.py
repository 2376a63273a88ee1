"""``edgewatch simulate`` through the real console script."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from simulators.badinput import read_records
from simulators.dataset import generate_dataset
from tests.conftest import CliRunner
from tests.simulators.conftest import SubscriberFactory
from tests.simulators.test_publish import ARRIVAL_TIMEOUT_S, _small_cmapss
from tests.support import Broker, free_port


def test_dataset_command_writes_the_generator_output(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    done = cli(
        "simulate", "dataset", "--out", str(out), "--assets", "3", "--seed", "2",
        "--duration", "2h", "--rate-hz", "0.05",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    frame = pd.read_parquet(out / "telemetry.parquet")
    expected = generate_dataset(3, 2, duration_s=7200.0, rate_hz=0.05)
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    meta = json.loads((out / "assets.json").read_text())
    assert [a["asset"] for a in meta["assets_plan"]] == ["pump-001", "pump-002", "pump-003"]


def test_fleet_command_publishes_and_reports(
    cli: CliRunner, mqtt_broker: Broker, subscribe: SubscriberFactory, tmp_path: Path
) -> None:
    sub = subscribe(mqtt_broker, "edgewatch/cli-site/#")
    done = cli(
        "simulate", "fleet", "--broker", mqtt_broker.url, "--site", "cli-site",
        "--assets", "4", "--rate-hz", "1", "--duration", "2m", "--seed", "4",
        "--fault-fraction", "0.5", "--as-fast-as-possible", "--batch", "3",
        "--truth", "truth.parquet", "--bad-input-rate", "0.05",
        "--bad-input-record", "bad.csv", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["sent"] == report["messages"] == report["attempted"] > 0
    assert report["not_sent"] == 0 and report["errors"] == []
    assert report["rate_msg_s"] > 0
    assert sub.wait_for(report["sent"], ARRIVAL_TIMEOUT_S)
    truth = pd.read_parquet(tmp_path / "truth.parquet")
    assert list(truth.columns) == ["asset", "ts", "seq", "fault", "rul", "sensor_fault"]
    assert len(truth) == report["readings"]
    assert len(read_records(tmp_path / "bad.csv")) == report["bad_messages"]


def test_replay_command_cmapss(
    cli: CliRunner, mqtt_broker: Broker, subscribe: SubscriberFactory, tmp_path: Path
) -> None:
    src = _small_cmapss(tmp_path)
    sub = subscribe(mqtt_broker, "edgewatch/demo/engine-002/#")
    done = cli(
        "simulate", "replay", "--format", "cmapss", str(src), "--broker", mqtt_broker.url,
        "--rate", "2000", "--truth", "truth.csv",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "messages sent" in done.stdout and "36" in done.stdout
    assert sub.wait_for(12, ARRIVAL_TIMEOUT_S)
    assert len(pd.read_csv(tmp_path / "truth.csv")) == 36


def test_unreachable_broker_is_one_line_and_exit_1(cli: CliRunner) -> None:
    done = cli(
        "simulate", "fleet", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--duration", "10s",
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot reach MQTT broker" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_bad_arguments_are_usage_errors(cli: CliRunner, tmp_path: Path) -> None:
    done = cli("simulate", "replay", "--format", "csv", str(tmp_path))
    assert done.returncode == 2 and "--time-column" in done.stderr
    done = cli("simulate", "fleet", "--bad-input-rate", "0.1", "--bad-input-kinds", "nope")
    assert done.returncode == 2 and "unknown bad-input kind" in done.stderr
