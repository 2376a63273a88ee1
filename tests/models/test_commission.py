from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.errors import ModelError
from models.bundle import load_bundle
from models.commission import AssetBaseline, commission, split_baseline
from models.predictor import Predictor
from models.preprocessing import sliding_windows, windows_ending_at
from models.scoring import ThresholdRule, alarm_flags, calibrate
from tests.models.conftest import SENSORS, WINDOW, healthy_series, make_bundle


def test_commission_save_load_and_predict(tmp_path: Path, bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    series = healthy_series(600)
    base = commission(series[:400], bundle, asset="p1", epochs=8, cpu_budget_s=10.0)
    assert base.info["initialised_from"].startswith("fleet:")
    assert base.threshold >= base.rule.min_threshold
    later = sliding_windows(series[400:], WINDOW, 4)
    healthy_scores = base.score(later)
    assert 0.3 < float(np.median(healthy_scores)) < 3.0

    broken = series.copy()
    broken[:, 1] += 3.0  # vibration jumps: six baseline standard deviations or more
    faulty_scores = base.score(sliding_windows(broken[400:], WINDOW, 4))
    assert float(np.median(faulty_scores)) > base.threshold

    base.save(tmp_path / "p1")
    again = AssetBaseline.load(tmp_path / "p1")
    assert np.allclose(again.score(later), healthy_scores)

    pred = Predictor(bundle).predict(later[:3], [again, None, again])
    assert pred.anomaly_score is not None and pred.threshold is not None
    assert pred.threshold[0] == again.threshold and pred.threshold[1] == bundle.anomaly.threshold  # type: ignore[union-attr]
    assert np.allclose(pred.anomaly_score[[0, 2]], healthy_scores[[0, 2]], rtol=1e-5)


def test_commission_is_deterministic(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    s = healthy_series(300)
    a = commission(s, bundle, epochs=3)
    b = commission(s, bundle, epochs=3)
    assert a.threshold == b.threshold and a.reference == b.reference
    scratch = [commission(s[:, :2], bundle, sensors=["x", "y"], epochs=2) for _ in range(2)]
    assert scratch[0].threshold == scratch[1].threshold


def test_commission_from_scratch_for_other_sensors(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    s = healthy_series(300)[:, :2]
    s[5:9, 0] = np.nan  # gaps are filled, not crashed on
    base = commission(s, bundle, sensors=["x", "y"], epochs=3)
    assert base.info["initialised_from"] == "scratch"
    assert base.sensors == ("x", "y")
    with pytest.raises(ModelError, match="does not match bundle"):
        Predictor(bundle).predict(np.zeros((1, 3, WINDOW), np.float32), [base])


def test_damaged_baseline_refused(tmp_path: Path, bundle_dir: Path) -> None:
    base = commission(healthy_series(300), load_bundle(bundle_dir), epochs=2)
    base.save(tmp_path / "b")
    w = tmp_path / "b" / "autoencoder.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelError, match="damaged"):
        AssetBaseline.load(tmp_path / "b")


def test_predictor_without_rul_or_baselines(tmp_path: Path) -> None:
    only_ae = load_bundle(make_bundle(tmp_path / "ae", rul=False))
    out = Predictor(only_ae).predict(np.full((2, len(SENSORS), WINDOW), 50.0, np.float32))
    assert out.rul is None and out.anomaly_score is not None and out.anomalous is not None
    only_rul = load_bundle(make_bundle(tmp_path / "rul", anomaly=False))
    out = Predictor(only_rul).predict(np.zeros((2, len(SENSORS), WINDOW), np.float32))
    assert out.anomaly_score is None and out.rul is not None and out.rul_unit == "cycles"
    with pytest.raises(ModelError, match="shaped"):
        Predictor(only_rul).predict(np.zeros((2, 2, WINDOW), np.float32))
    with pytest.raises(ModelError, match="NaN"):
        Predictor(only_rul).predict(np.full((1, 3, WINDOW), np.nan, np.float32))


def test_threshold_rule_and_hysteresis() -> None:
    rule = ThresholdRule(
        quantile=0.5, margin=2.0, min_threshold=1.0, on_count=2, off_count=2, off_ratio=0.5
    )
    cal = calibrate([1.0, 2.0, 3.0], rule)
    assert cal.reference == 2.0 and cal.threshold == 2.0
    flags = alarm_flags([3, 1, 3, 3, 1.5, 0.5, 0.5, 3], cal.threshold, rule)
    assert flags.tolist() == [False, False, False, True, True, True, False, False]


def test_split_baseline_holds_out_spread_blocks() -> None:
    train, hold = split_baseline(400, 32, 0.25)
    assert (train, hold) == ([(0, 300)], [(300, 400)])
    train, hold = split_baseline(2000, 32, 0.25)
    assert len(hold) == 4 and hold[-1][1] == 2000
    held = sum(b - a for a, b in hold)
    assert held == 500 and sum(b - a for a, b in train) == 1500


def _warming_up(n: int, seed: int = 0) -> np.ndarray:
    """A machine warming up at a steady pace (temperature +1 per 400 rows), other
    sensors steady, all with small noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    return np.stack(
        [
            40.0 + t / 400.0 + rng.normal(0, 0.02, n),
            2.0 + rng.normal(0, 0.05, n),
            10.0 + 0.3 * np.sin(t / 20.0) + rng.normal(0, 0.05, n),
        ],
        axis=1,
    ).astype(np.float32)


def test_own_baseline_tolerates_the_drift_its_baseline_showed(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    series = _warming_up(800)
    base = commission(series[:400], bundle, sensors=["t", "v", "c"], scratch=True, epochs=30)
    # The same warm-up, going on for as long again: 50 noise-sigmas beyond the baseline,
    # not a fault.
    later = windows_ending_at(series, np.arange(400, 800), base.window)
    assert float(np.mean(base.score(later) > base.threshold)) < 0.05
    # A fault of six noise-sigmas in a sensor that held still is still seen.
    broken = series.copy()
    broken[600:, 1] += 0.3
    faulty = windows_ending_at(broken, np.arange(650, 800), base.window)
    assert float(np.mean(base.score(faulty) > base.threshold)) > 0.95


def test_own_baseline_verdicts_follow_a_fault_within_its_score_steps(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    series = _warming_up(800, seed=1)
    base = commission(series[:400], bundle, sensors=["t", "v", "c"], scratch=True, epochs=30)
    assert base.score_steps is not None
    broken = series.copy()
    broken[600:700, 1] += 1.0
    ends = np.arange(400, 800)
    flagged = base.score(windows_ending_at(broken, ends, base.window)) > base.threshold
    rows = ends[flagged]
    # Flagged from the fault's first rows to its last ones: not a whole window late,
    # and not for a whole window after it has cleared (the network's receptive field
    # carries a little of the past into the newest steps' reconstruction).
    assert rows.min() >= 600 and rows.min() < 600 + base.score_steps
    assert rows.max() >= 699 and rows.max() < 700 + base.window // 2


def test_a_sensor_that_never_moved_in_the_baseline_is_not_judged(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    series = _warming_up(600, seed=2)
    flag = np.zeros((600, 1), dtype=np.float32)  # a status flag, or a label column
    with_flag = np.concatenate([series, flag], axis=1)
    base = commission(
        with_flag[:400], bundle, sensors=["t", "v", "c", "flag"], scratch=True, epochs=10
    )
    assert base.info["constant_sensors"] == ["flag"]
    flipped = with_flag.copy()
    flipped[450:460, 3] = 1.0
    ends = np.arange(400, 600)
    quiet = base.score(windows_ending_at(with_flag, ends, base.window))
    changed = base.score(windows_ending_at(flipped, ends, base.window))
    np.testing.assert_allclose(changed, quiet, rtol=1e-4)
