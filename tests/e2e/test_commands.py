"""The README's demo and the benchmark, run as a user runs them."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from models.bundle import load_bundle
from models.bundles import default_bundle_path
from tests.conftest import CliRunner
from tests.e2e.harness import wait_until
from tests.support import start_cli


def _scored(db: Path) -> dict[str, int]:
    """Predictions per asset so far (none while the demo's database is not there yet)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            query = (
                "select a.name, count(*) from predictions p join assets a on a.id = p.asset_id"
                " group by 1"
            )
            return dict(conn.execute(query))
    except sqlite3.Error:
        return {}


def demo_until(
    tmp_path: Path,
    args: tuple[str, ...],
    env: dict[str, str],
    ready: Callable[[str], bool],
    what: str,
    duration: str,
) -> str:
    """Run ``edgewatch demo`` for at most ``duration`` (its wall-clock length, which
    also sets how many simulated days it replays) until ``ready(its output so far)``,
    then Ctrl-C it as a user would: a quiet machine need not wait the duration out.
    Returns what it printed."""
    out = tmp_path / f"demo-{len(list(tmp_path.glob('demo-*.out')))}.out"
    demo = start_cli("demo", *args, "--duration", duration, cwd=tmp_path, out=out, env=env)
    err = out.with_name(out.name + ".err")
    try:
        wait_until(lambda: demo.poll() is not None or ready(out.read_text()), 240, what)
        assert demo.poll() is None, f"the demo ended by itself: {err.read_text()[-2000:]}"
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0, err.read_text()[-2000:]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    return out.read_text()


def test_demo_runs_the_whole_system_and_exits_cleanly(cli: CliRunner, tmp_path: Path) -> None:
    # A shorter baseline than the default day so that pumps get scored in 20 s.
    env = {"EDGEWATCH_MODEL__COMMISSION_SAMPLES": "200"}
    demo_args = ("--assets", "3", "--compressors", "1")
    db = tmp_path / "edgewatch-data" / "edgewatch.db"
    # Until the four assets are scored (they commission two at a time): 60 s leaves a
    # slow or busy machine the time; a quiet one scores all four in about 20.
    printed = demo_until(
        tmp_path, demo_args, env, lambda _: len(_scored(db)) == 4, "every asset scored", "60s"
    )
    assert "demo finished" in printed
    with sqlite3.connect(db) as conn:
        assets = conn.execute("select count(*) from assets").fetchone()[0]
    scored = _scored(db)
    assert assets == 4
    # The compressor's sensors are not the pump bundle's: it learns them and a
    # baseline of its own, and is scored like the pumps.
    assert set(scored) == {"pump-001", "pump-002", "pump-003", "comp-001"}
    listed = cli("baseline", "list", "--json")
    baselines = json.loads(listed.stdout)
    assert {row["asset"] for row in baselines} == set(scored)
    # Each shows the data times of the readings its baseline was learnt from.
    assert all(0 < row["baseline_first_ms"] < row["baseline_last_ms"] for row in baselines)
    table = cli("baseline", "list")
    assert "learnt from" in table.stdout and " to " in table.stdout
    # Run again, as users do: the new run simulates the same days up to now, and
    # starts from a cleared directory instead of dead-lettering them as out of order.
    again = demo_until(
        tmp_path,
        demo_args,
        env,
        lambda text: "cleared the previous demo's records" in text and bool(_scored(db)),
        "a prediction after the restart",
        "60s",
    )
    assert "demo finished" in again
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


def test_demo_runs_on_the_embedded_broker_where_mosquitto_is_missing(tmp_path: Path) -> None:
    # "auto" picks the embedded broker only where Mosquitto is missing (a unit test
    # covers that choice); here it is asked for, whatever this machine has installed.
    env = {"EDGEWATCH_MODEL__COMMISSION_SAMPLES": "200"}
    db = tmp_path / "edgewatch-data" / "edgewatch.db"
    printed = demo_until(
        tmp_path,
        ("--assets", "3", "--compressors", "0", "--broker", "embedded"),
        env,
        lambda _: bool(_scored(db)),
        "a prediction",
        "30s",
    )
    assert "broker: edgewatch's embedded one" in printed
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
