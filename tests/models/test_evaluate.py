from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent.errors import DatasetError
from models.bundle import load_bundle
from models.evaluate import AnomalyOptions, evaluate_anomaly_csv, evaluate_rul_cmapss
from models.metrics import nasa_score, rmse
from tests.models.conftest import healthy_series


def test_evaluate_rul_last_window_with_padding(tmp_path: Path, fd001: Path) -> None:
    from models.pipelines import train_rul_bundle_cmapss
    from models.train import RulTrainConfig

    cfg = RulTrainConfig(
        epochs=1, max_units=4, channels=(4,), squeeze=2, hidden=4, val_cuts_per_unit=1
    )
    path, _ = train_rul_bundle_cmapss(fd001, tmp_path / "b", cfg)
    bundle = load_bundle(path)
    frame = pd.read_csv(fd001, sep=r"\s+", header=None)
    test = pd.concat([frame[frame[0] == 1].iloc[:10], frame[frame[0] == 2].iloc[:150]])
    test.to_csv(tmp_path / "test.txt", sep=" ", header=False, index=False)
    (tmp_path / "RUL.txt").write_text("180\n42\n")
    r = evaluate_rul_cmapss(bundle, tmp_path / "test.txt", tmp_path / "RUL.txt")
    assert r.units == 2 and r.padded_units == 1  # the 10-cycle unit is padded, not dropped
    pred = [u["predicted_rul"] for u in r.per_unit]
    assert r.rmse == pytest.approx(rmse(pred, [125.0, 42.0]))  # truth capped at 125
    assert r.nasa_score == pytest.approx(nasa_score(pred, [125.0, 42.0]))


def _write_asset(path: Path, seed: int, fault_from: int | None, n: int = 700) -> None:
    s = healthy_series(n, seed).astype(np.float64)
    label = np.zeros(n, dtype=int)
    if fault_from is not None:
        s[fault_from:, 1] += 4.0
        label[fault_from:] = 1
    frame = pd.DataFrame(s, columns=["temp", "vib", "cur"])
    frame.loc[450:452, "temp"] = np.nan  # missing values are carried forward
    frame.insert(0, "time", pd.date_range("2026-01-01", periods=n, freq="min").astype(str))
    frame["changepoint"] = 0
    frame["anomaly"] = label
    frame.to_csv(path, sep=";", index=False)


def test_anomaly_protocol_on_labelled_csv(tmp_path: Path, bundle_dir: Path) -> None:
    d = tmp_path / "csv"
    d.mkdir()
    _write_asset(d / "a.csv", 1, fault_from=550)
    _write_asset(d / "b.csv", 2, fault_from=None)
    opts = AnomalyOptions(
        time_column="time",
        label_column="anomaly",
        sep=";",
        train_rows=400,
        exclude=("changepoint",),
        cpu_budget_s=5.0,
    )
    result = evaluate_anomaly_csv(load_bundle(bundle_dir), d, opts)
    assert [f.name for f in result.files] == ["a", "b"]
    assert all(f.initialised_from == "scratch" for f in result.files)  # sensors differ
    assert all(f.sensors == 3 for f in result.files)
    assert result.pooled.tp + result.pooled.fn == 150
    assert result.pooled.tp + result.pooled.fp + result.pooled.tn + result.pooled.fn == 600
    assert result.pooled.recall > 0.9 and result.pooled.far < 0.1
    json.dumps(result.as_dict(), allow_nan=True)
    (d / "anomaly-free.csv").write_text("time;temp;vib;cur\n0;1;2;3\n")
    again = evaluate_anomaly_csv(load_bundle(bundle_dir), d, opts)
    assert again.skipped_files == ["anomaly-free.csv"] and len(again.files) == 2
    with pytest.raises(DatasetError, match="label column"):
        evaluate_anomaly_csv(
            load_bundle(bundle_dir), d, AnomalyOptions(label_column="nope", sep=";")
        )
