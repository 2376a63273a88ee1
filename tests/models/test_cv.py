"""k-fold cross-validation of RUL configurations, on tiny configurations of FD001."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agent.errors import DatasetError
from models.bundle import load_bundle
from models.cv import (
    cross_validate_rul,
    cross_validation_from_dict,
    fold_units,
    train_rul_final,
)
from models.pipelines import train_rul_bundle_cv
from models.preprocessing import load_cmapss
from models.train import RulTrainConfig
from tests.conftest import CliRunner

#: A few hundred parameters, a few units: each fold trains in well under a second.
TINY = RulTrainConfig(
    max_units=9,
    epochs=4,
    ensemble=2,
    channels=(4,),
    squeeze=2,
    hidden=8,
    batch_size=256,
    val_cuts_per_unit=3,
    learning_rate=5e-3,
)


def test_folds_split_units_disjointly_and_evenly(fd001: Path) -> None:
    units = load_cmapss(fd001).units[:11]
    folds = fold_units(units, 5, seed=0)
    ids = [u.unit_id for fold in folds for u in fold]
    assert sorted(ids) == [u.unit_id for u in units]
    assert sorted(len(f) for f in folds) == [2, 2, 2, 2, 3]
    assert [[u.unit_id for u in f] for f in fold_units(units, 5, seed=0)] == [
        [u.unit_id for u in f] for f in folds
    ]
    with pytest.raises(DatasetError, match="cannot make 5 folds"):
        fold_units(units[:4], 5, seed=0)


def test_each_fold_is_scored_at_the_epoch_the_other_folds_chose(fd001: Path) -> None:
    data = load_cmapss(fd001)
    cv = cross_validate_rul(data, TINY, folds=3)
    assert len(cv.folds) == 3
    held = [set(f.units) for f in cv.folds]
    assert set.union(*held) == {u.unit_id for u in data.units[:9]}
    assert sum(len(h) for h in held) == 9
    best = [f.best_epoch for f in cv.folds]
    for k, fold in enumerate(cv.folds):
        others = [b for j, b in enumerate(best) if j != k]
        assert fold.epoch == int(np.floor(np.median(others) + 0.5))
        assert fold.windows == 3 * len(fold.units)  # val_cuts_per_unit cuts per unit
        # Its own best epoch is the optimistic figure the protocol refuses to report.
        assert fold.rmse_at_best <= fold.rmse + 1e-9
    assert cv.epochs == int(np.floor(np.median(best) + 0.5))
    mean, sd = cv.rmse
    assert mean == pytest.approx(np.mean([f.rmse for f in cv.folds]))
    assert sd == pytest.approx(np.std([f.rmse for f in cv.folds], ddof=1))
    # Each fold's 80 % interval is calibrated on the other folds, then measured on it.
    assert cv.interval is not None and cv.interval.level == 0.8 and cv.interval.scale > 0
    assert all(f.coverage is not None and 0.0 <= f.coverage <= 1.0 for f in cv.folds)
    assert all(f.interval_width is not None and f.interval_width > 0 for f in cv.folds)
    coverage = cv.coverage
    assert coverage is not None
    assert cv.metrics()["cv_interval_coverage_mean"] == pytest.approx(coverage[0])
    # The schedule cannot peek at held-out units: the final model has none.
    assert cv.config.plateau_on == "train"
    again = cross_validate_rul(data, TINY, folds=3)
    assert [f.rmse for f in again.folds] == [f.rmse for f in cv.folds]
    # What a manifest records reads back as the same cross-validation.
    recorded = cross_validation_from_dict(json.loads(json.dumps(cv.as_dict())))
    assert recorded.as_dict() == json.loads(json.dumps(cv.as_dict()))
    assert recorded.config == cv.config and recorded.interval == cv.interval

    final = train_rul_final(data, TINY, cv.epochs)
    assert final.val_units == [] and len(final.train_units) == 9
    assert final.config.epochs == cv.epochs
    assert max(h["epoch"] for h in final.history) == cv.epochs


def test_train_rul_cv_prints_the_table_and_records_it_in_the_bundle(
    cli: CliRunner, fd001: Path, tmp_path: Path
) -> None:
    tiny = ["--max-units", "6", "--epochs", "2", "--ensemble", "1", "--channels", "8,8"]
    bad = cli(
        "train", "rul", "--data", str(fd001), *tiny, "--dilations", "1", "--cv", "3", "--cv-only"
    )
    assert bad.returncode == 2 and "dilation" in bad.stderr and "Traceback" not in bad.stderr
    tiny += ["--dilations", "1,2", "--batch-size", "512"]
    shown = cli("train", "rul", "--data", str(fd001), *tiny, "--cv", "3", "--cv-only")
    assert shown.returncode == 0, shown.stderr
    assert "mean +- sd" in shown.stdout and " +- " in shown.stdout
    assert not (tmp_path / "b").exists()

    done = cli(
        "train", "rul", "--data", str(fd001), *tiny, "--cv", "3", "--out", "b", "--json"
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    folds = out["cross_validation"]["folds"]
    assert len(folds) == 3 and out["metrics"]["cv_folds"] == 3.0
    bundle = load_bundle(tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    training = manifest["training"]
    assert training["cross_validation"]["folds"] == folds
    assert training["config"]["epochs"] == out["cross_validation"]["epochs"]
    assert len(training["train_units"]) == 6 and training["validation_units"] == []
    assert manifest["rul"]["network"]["dilations"] == [1, 2]
    assert bundle.version == out["version"]
    # One member: no spread, no interval.
    assert manifest["rul"]["interval"] is None and out["cross_validation"]["interval"] is None
    assert manifest["metrics"]["cv_rmse_mean"] == pytest.approx(np.mean([f["rmse"] for f in folds]))


def test_the_cv_bundle_carries_the_interval_the_folds_calibrated(
    fd001: Path, tmp_path: Path
) -> None:
    path, metrics, cv = train_rul_bundle_cv(fd001, tmp_path / "b", TINY, folds=3)
    bundle = load_bundle(path)
    assert bundle.rul is not None and cv.interval is not None
    assert bundle.rul.interval == cv.interval and len(bundle.rul.members) == 2
    assert metrics["interval_scale"] == cv.interval.scale
    assert 0.0 <= metrics["cv_interval_coverage_mean"] <= 1.0
    # A finished cross-validation of the same configuration need not run again...
    path2, metrics2, _ = train_rul_bundle_cv(fd001, tmp_path / "c", TINY, folds=3, cv=cv)
    weights = [json.loads((p / "manifest.json").read_text())["files"] for p in (path, path2)]
    assert weights[0]["rul.safetensors"] == weights[1]["rul.safetensors"]
    assert metrics2.keys() == metrics.keys()
    # ...but one of another configuration is refused.
    with pytest.raises(DatasetError, match="not of this configuration"):
        train_rul_bundle_cv(fd001, tmp_path / "d", replace(TINY, hidden=9), folds=3, cv=cv)
