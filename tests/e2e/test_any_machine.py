"""Machines no bundle knows, through the real `edgewatch run` and `edgewatch simulate replay`.

A labelled CSV directory (one foreign test rig per file, sensor names of its own) is
replayed over Mosquitto into the agent with default settings and only
``commission_samples`` set, as a new user would; the agent must learn each rig's
sensors, commission its own model and score every later row exactly as
``evaluate anomaly`` does offline on the same files (one scoring path).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.bundle import load_bundle
from models.bundles import default_bundle_path
from models.evaluate import AnomalyOptions, evaluate_anomaly_csv
from models.metrics import DetectionCounts
from tests.conftest import CliRunner
from tests.e2e.harness import AgentProcess, query, scalar, wait_until, write_config
from tests.support import Broker

BASELINE = 400
ROWS = 620
FAULT_FROM = 520
#: Sensor names of a rig the shipped pump bundle has never seen.
SENSORS = ("Accelerometer1RMS", "Current", "Pressure", "Thermocouple", "Volume Flow RateRMS")
DRAIN_S = 180.0


def write_rig(path: Path, seed: int, faulty: bool) -> None:
    """A test rig sampled once a second: a slow duty cycle, correlated sensors, noise;
    the faulty one loses pressure and vibrates harder from ``FAULT_FROM`` on."""
    rng = np.random.default_rng(seed)
    t = np.arange(ROWS)
    load = 0.5 + 0.3 * np.sin(2 * np.pi * t / 120.0)
    frame = pd.DataFrame(
        {
            "datetime": pd.date_range("2026-11-01", periods=ROWS, freq="s").astype(str),
            "Accelerometer1RMS": 0.2 + 0.05 * load + rng.normal(0, 0.004, ROWS),
            "Current": 1.5 + 0.8 * load + rng.normal(0, 0.02, ROWS),
            "Pressure": 0.9 - 0.2 * load + rng.normal(0, 0.01, ROWS),
            "Thermocouple": 28.0 + 3.0 * load + rng.normal(0, 0.05, ROWS),
            "Volume Flow RateRMS": 32.0 + 4.0 * load + rng.normal(0, 0.2, ROWS),
        }
    )
    frame["anomaly"] = 0
    if faulty:
        frame.loc[FAULT_FROM:, "Pressure"] -= 0.15
        frame.loc[FAULT_FROM:, "Accelerometer1RMS"] += 0.03
        frame.loc[FAULT_FROM:, "anomaly"] = 1
    frame.to_csv(path, sep=";", index=False)


@pytest.fixture(scope="module")
def rigs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rigs")
    write_rig(folder / "rig-1.csv", 1, faulty=True)
    write_rig(folder / "rig-2.csv", 2, faulty=False)
    return folder


def test_foreign_rigs_are_scored_live_as_offline(
    tmp_path: Path, mqtt_broker: Broker, cli: CliRunner, rigs: Path
) -> None:
    config = write_config(
        tmp_path / "edgewatch.toml",
        tmp_path / "data",
        mqtt_broker.port,
        model={"commission_samples": BASELINE, "commission_cpu_budget_s": 30.0},
    )
    agent = AgentProcess(config=config, cwd=tmp_path)
    agent.start()
    db = tmp_path / "data" / "edgewatch.db"
    try:
        done = cli(
            "--config", str(config), "simulate", "replay", str(rigs), "--format", "csv",
            "--time-column", "datetime", "--sep", ";", "--label-column", "anomaly",
            "--asset-from-file", "--as-fast-as-possible", "--truth", "truth.csv",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        scored = (ROWS - BASELINE) * 2
        wait_until(
            lambda: (scalar(db, "select count(*) from predictions") or 0) >= scored,
            DRAIN_S,
            "every row after the baselines scored",
        )
    finally:
        assert agent.stop() == 0, agent.log_text()[-3000:]

    assert scalar(db, "select count(*) from dead_letters") == 0
    assert scalar(db, "select coalesce(sum(count), 0) from reading_blocks") == ROWS * 2
    learnt = query(db, "select message from events where kind = 'sensors_learnt'")
    assert len(learnt) == 2 and all("own model" in m for (m,) in learnt)
    # Own models are trained in children; the agent itself never loads torch.
    beat = scalar(db, "select health_json from heartbeats")
    assert beat is not None and json.loads(beat)["torch_loaded"] is False
    costs = query(db, "select message from events where kind = 'commissioned'")
    assert len(costs) == 2 and all("peak RSS" in m for (m,) in costs)

    offline = evaluate_anomaly_csv(
        load_bundle(default_bundle_path("pump")),
        rigs,
        AnomalyOptions(
            time_column="datetime", label_column="anomaly", sep=";", train_rows=BASELINE
        ),
    )
    for result in offline.files:
        rows = query(
            db,
            "select p.anomaly_score, p.anomaly_threshold, p.is_anomaly, p.rul "
            "from predictions p join assets a on a.id = p.asset_id "
            "where a.name = ? order by p.window_end_ms",
            result.name,
        )
        live = np.array([r[0] for r in rows])
        assert result.scores is not None and result.anomalous is not None
        # The row after the baseline is scored first, then every row: the same rows.
        assert len(live) == len(result.scores) == ROWS - BASELINE
        assert rows[0][1] == pytest.approx(result.threshold, rel=1e-4)
        # ONNX Runtime in the agent, torch offline: the same numbers to float precision.
        np.testing.assert_allclose(live, result.scores, rtol=1e-3, atol=1e-4)
        assert [bool(r[2]) for r in rows] == result.anomalous.tolist()
        assert all(r[3] is None for r in rows)  # no RUL for a machine no bundle knows
    faulty = {f.name: f for f in offline.files}["rig-1"]
    assert faulty.detection_delay_rows is not None

    # `evaluate live` scores the agent's own records against what the replay sent:
    # per window, exactly the offline verdicts against the labels.
    done = cli(
        "--config", str(config), "evaluate", "live", "--truth", "truth.csv",
        "--label", "anomaly", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    live_eval = json.loads(done.stdout)
    want = DetectionCounts(0, 0, 0, 0)
    for result in offline.files:
        labels = pd.read_csv(rigs / f"{result.name}.csv", sep=";")["anomaly"].to_numpy(bool)
        assert result.anomalous is not None
        want = want + DetectionCounts.from_flags(result.anomalous, labels[BASELINE:])
    pooled = live_eval["pooled"]["window"]
    assert (pooled["tp"], pooled["fp"], pooled["tn"], pooled["fn"]) == (
        want.tp,
        want.fp,
        want.tn,
        want.fn,
    )
    assert sum(a["unscored_rows"] for a in live_eval["assets"]) == 2 * BASELINE
    alerts = query(db, "select a.name from alerts l join assets a on a.id = l.asset_id")
    assert {name for (name,) in alerts} == {"rig-1"}
