"""Torch-only baselines get their ONNX graphs in a child process when the agent
switches to the onnx backend (instead of a new day of baseline readings)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from agent.domain import AssetPlan, CommissionRequest
from agent.inference.baselines import BaselineStore
from agent.inference.commissioner import ChildCommissioner
from models.bundle import load_bundle
from models.bundles import default_bundle_path
from models.commission import commission
from models.lean import LeanBaseline

PUMP = default_bundle_path("pump")


def _samples(seed: int) -> np.ndarray:
    bundle = load_bundle(PUMP)
    assert bundle.anomaly is not None
    scaler = bundle.anomaly.scaler
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 0.05, size=(bundle.window * 8, len(bundle.sensors)))
    return (np.asarray(scaler.offset) + np.asarray(scaler.scale) * (0.5 + z)).astype(np.float32)


def test_torch_baselines_are_converted_and_score_alike(tmp_path: Path) -> None:
    bundle = load_bundle(PUMP)
    store = BaselineStore(tmp_path / "baselines")
    baseline = commission(_samples(1), bundle, asset="p1", cpu_budget_s=5, epochs=2)
    store.save("p1", baseline)
    # A folder that cannot be converted stays as it is, for load_all to report.
    broken = store.path("p2")
    broken.mkdir(parents=True)
    (broken / "baseline.json").write_text('{"asset": "p2"}')
    commissioner = ChildCommissioner(PUMP, store, cpu_budget_s=10)
    assert commissioner.torch_only() == sorted([store.path("p1"), broken])

    converted = asyncio.run(commissioner.convert(commissioner.torch_only()))

    assert converted == 1
    assert commissioner.torch_only() == [broken]
    lean = LeanBaseline.load(store.path("p1"))
    windows = np.stack([_samples(5)[i : i + bundle.window].T for i in range(0, 64, 8)])
    expected = baseline.score(windows)
    assert np.max(np.abs(lean.score(windows) - expected)) <= 1e-4
    assert not (store.root / ".incoming").exists() or not any((store.root / ".incoming").iterdir())


def test_a_profiles_run_sensor_reaches_the_childs_own_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 400
    t = np.arange(n)
    current = 50.0 + 10.0 * np.sin(t / 15.0) + rng.normal(0, 0.5, n)
    samples = np.stack(
        [current, 0.3 + 0.002 * current + rng.normal(0, 0.01, n), 40 + rng.normal(0, 0.1, n)],
        axis=1,
    ).astype(np.float32)
    plan = AssetPlan(
        ("current_a", "temp_c", "vib_g"), from_bundle=False, rul=False, run_sensor="current_a"
    )
    store = BaselineStore(tmp_path / "baselines")
    commissioner = ChildCommissioner(PUMP, store, cpu_budget_s=10)
    lean = asyncio.run(commissioner.fit(CommissionRequest("m1", plan, samples, 0, n * 1000)))
    assert lean.run_condition is not None and lean.run_condition.sensor == "current_a"
    assert lean.run_level is not None and abs(lean.run_level - 50.0) < 5.0
    running = samples[:32].T[None]
    stopped = running.copy()
    stopped[0, 0, -5:] = 0.0  # the motor stops for the window's last five samples
    assert lean.judged(np.concatenate([running, stopped])).tolist() == [True, False]
