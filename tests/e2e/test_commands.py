"""The README's demo and the benchmark, run as a user runs them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from models.bundle import load_bundle
from models.bundles import default_bundle_path
from tests.conftest import CliRunner


def test_demo_runs_the_whole_system_and_exits_cleanly(cli: CliRunner, tmp_path: Path) -> None:
    # A shorter baseline than the default day so that pumps get scored in 20 s.
    env = {"EDGEWATCH_MODEL__COMMISSION_SAMPLES": "200"}
    demo_args = ("demo", "--assets", "3", "--compressors", "1", "--duration", "20s")
    # Long enough for the four assets to commission two at a time on a slow or busy
    # machine (the demo's duration is wall-clock time; locally all are scored in 20 s).
    result = cli(*demo_args[:-1], "60s", env=env, timeout_s=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "demo finished" in result.stdout
    db = tmp_path / "edgewatch-data" / "edgewatch.db"
    assert db.is_file()
    with sqlite3.connect(db) as conn:
        assets = conn.execute("select count(*) from assets").fetchone()[0]
        query = (
            "select a.name, count(*) from predictions p join assets a on a.id = p.asset_id"
            " group by 1"
        )
        scored = dict(conn.execute(query))
    assert assets == 4
    # The compressor's sensors are not the pump bundle's: it learns them and a
    # baseline of its own, and is scored like the pumps.
    assert set(scored) == {"pump-001", "pump-002", "pump-003", "comp-001"}
    listed = cli("baseline", "list", "--json")
    assert {row["asset"] for row in json.loads(listed.stdout)} == set(scored)
    # Run again, as users do: the new run simulates the same days up to now, and
    # starts from a cleared directory instead of dead-lettering them as out of order.
    again = cli(*demo_args, env=env, timeout_s=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "cleared the previous demo's records" in again.stdout
    with sqlite3.connect(db) as conn:
        dead = conn.execute("select count(*) from dead_letters").fetchone()[0]
        predictions = conn.execute("select count(*) from predictions").fetchone()[0]
    assert dead == 0
    assert predictions > 0
    # What the demo tells a new user to run next works on its database.
    assets = cli("records", "assets", "--format", "json")
    assert assets.returncode == 0, assets.stderr
    assert {row["asset"] for row in json.loads(assets.stdout)} == set(scored)
    alerts = cli("records", "alerts")
    assert alerts.returncode == 0, alerts.stderr
    fleet = cli("report", "--fleet", "--out", "fleet.png")
    assert fleet.returncode == 0, fleet.stderr
    assert (tmp_path / "fleet.png").read_bytes().startswith(b"\x89PNG")


def test_demo_runs_on_the_embedded_broker_where_mosquitto_is_missing(
    cli: CliRunner, tmp_path: Path
) -> None:
    # "auto" picks the embedded broker only where Mosquitto is missing (a unit test
    # covers that choice); here it is asked for, whatever this machine has installed.
    env = {"EDGEWATCH_MODEL__COMMISSION_SAMPLES": "200"}
    result = cli(
        "demo", "--assets", "3", "--compressors", "0", "--duration", "15s", "--broker", "embedded",
        env=env, timeout_s=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "broker: edgewatch's embedded one" in result.stdout
    db = tmp_path / "edgewatch-data" / "edgewatch.db"
    with sqlite3.connect(db) as conn:
        readings = conn.execute("select coalesce(sum(count), 0) from reading_blocks").fetchone()[0]
        predictions = conn.execute("select count(*) from predictions").fetchone()[0]
        dead = conn.execute("select count(*) from dead_letters").fetchone()[0]
    assert readings > 0
    assert predictions > 0
    assert dead == 0
    assert "listening on" in (tmp_path / "edgewatch-data/demo-broker/minibroker.log").read_text()


def test_bench_prints_its_figures(cli: CliRunner) -> None:
    result = cli(
        "bench",
        "--messages",
        "2000",
        "--batch-messages",
        "100",
        "--assets",
        "5",
        "--latency-seconds",
        "5",
        "--backend",
        "onnx",
        "--json",
        timeout_s=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["ceiling_msg_s"] > 0
    assert list(report["backends"]) == ["onnx"]
    onnx = report["backends"]["onnx"]
    # The bench measures what a default install runs: the shipped bundle's own hop,
    # as the agent itself reports it, cutting a window every hop readings (scored,
    # or shed when inference falls behind).
    shipped_hop = load_bundle(default_bundle_path("pump")).hop
    assert report["hop"] == shipped_hop
    assert onnx["hop"] == shipped_hop
    cut = onnx["windows_per_reading"] + onnx["shed_per_reading"]
    assert cut == pytest.approx(1 / shipped_hop, rel=0.1)
    assert report["extra"] == []
    assert onnx["lost"] == 0 and onnx["batched_lost"] == 0
    assert onnx["agent_msg_s"] > 0 and onnx["prediction_latency_ms"]["n"] > 0
    assert onnx["cold_start_s"] > 0
    steady = onnx["rss_steady_mb"]
    assert steady["growth"] == round(steady["last"] - steady["first"], 1)
    assert 0 < steady["span_s"] <= 60
    inference = onnx["inference"]
    assert inference["torch_loaded"] is False
    assert set(inference["windows_per_s"]) == {"1", "16", "64"}
    assert all(rate > 0 for rate in inference["windows_per_s"].values())
    assert 0 < inference["single_window_ms"]["p50"] <= inference["single_window_ms"]["p99"]
