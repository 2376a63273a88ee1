"""ONNX export and the torch-free predictor: agreement, refusal of altered graphs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.errors import BundleError, ModelError
from models.bundle import load_bundle
from models.bundles import default_bundle_path
from models.commission import AssetBaseline, commission
from models.lean import (
    LeanBaseline,
    OnnxPredictor,
    has_graphs,
    load_lean_bundle,
    tolerance_key,
)
from models.manifest import MANIFEST, seal, sha256_file
from models.onnx_export import export_baseline, export_bundle, quantize_int8
from models.predictor import Predictor

PUMP = default_bundle_path("pump")


def _windows(n: int, seed: int = 0) -> np.ndarray:
    bundle = load_bundle(PUMP)
    assert bundle.anomaly is not None
    scaler = bundle.anomaly.scaler
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, len(bundle.sensors), bundle.window))
    return (
        np.asarray(scaler.offset)[None, :, None] + np.asarray(scaler.scale)[None, :, None] * z
    ).astype(np.float32)


def test_shipped_bundles_carry_graphs_that_match_torch() -> None:
    for name in ("pump", "cmapss-fd001"):
        path = default_bundle_path(name)
        assert has_graphs(path)
        lean = load_lean_bundle(path)  # re-checks the golden windows
        assert lean.version == load_bundle(path).version
        diffs = lean.manifest["onnx"]["max_abs_diff"]
        tolerance = lean.manifest["onnx"]["tolerance"]
        assert tolerance["rul" if "rul" in tolerance else "anomaly_score"] == 1e-4
        assert all(v <= tolerance[tolerance_key(k, tolerance)] for k, v in diffs.items()), diffs


def test_onnx_and_torch_predictions_agree_with_and_without_baselines() -> None:
    x = _windows(37)
    torch_out = Predictor(PUMP).predict(x)
    onnx_out = OnnxPredictor(PUMP).predict(x)
    assert onnx_out.model_version == torch_out.model_version
    assert onnx_out.rul is not None and torch_out.rul is not None
    assert np.max(np.abs(onnx_out.rul - torch_out.rul)) <= 1e-4
    assert onnx_out.anomaly_score is not None and torch_out.anomaly_score is not None
    assert np.max(np.abs(onnx_out.anomaly_score - torch_out.anomaly_score)) <= 1e-4
    assert onnx_out.judged is not None and torch_out.judged is not None
    assert np.array_equal(onnx_out.judged, torch_out.judged)


def _asset_baseline(tmp_path: Path, asset: str, seed: int) -> tuple[AssetBaseline, Path]:
    samples = _windows(1, seed=3)[0].T.repeat(8, axis=0)  # (time, sensors)
    rng = np.random.default_rng(seed)
    samples = samples + rng.normal(0, 0.01, samples.shape).astype(np.float32)
    baseline = commission(samples, load_bundle(PUMP), asset=asset, cpu_budget_s=5, epochs=2)
    folder = baseline.save(tmp_path / asset)
    export_baseline(baseline, folder)
    return baseline, folder


def test_asset_baselines_share_one_session_and_score_like_torch(tmp_path: Path) -> None:
    (b1, f1), (b2, f2) = _asset_baseline(tmp_path, "p1", 1), _asset_baseline(tmp_path, "p2", 2)
    lean1, lean2 = LeanBaseline.load(f1), LeanBaseline.load(f2)
    # One architecture, one session: each asset brings only its weights.
    assert lean1.network is lean2.network
    assert lean1.weights is not None and lean2.weights is not None
    x = _windows(9, seed=5)
    rows_t: list[AssetBaseline | None] = [b1, b2, None] * 3
    rows_o: list[LeanBaseline | None] = [lean1, lean2, None] * 3
    t_out = Predictor(load_bundle(PUMP)).predict(x, rows_t)
    o_out = OnnxPredictor(PUMP).predict(x, rows_o)
    assert o_out.threshold is not None and t_out.threshold is not None
    assert (o_out.threshold == t_out.threshold).all()
    assert o_out.anomaly_score is not None and t_out.anomaly_score is not None
    assert np.max(np.abs(o_out.anomaly_score - t_out.anomaly_score)) <= 1e-4
    # The two assets' fine-tuned weights differ, and so do their scores.
    assert not np.allclose(o_out.anomaly_score[0::3], o_out.anomaly_score[1::3])


def test_damaged_baseline_weights_are_refused(tmp_path: Path) -> None:
    _, folder = _asset_baseline(tmp_path, "p1", 1)
    weights = folder / "autoencoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(ModelError, match=r"autoencoder\.safetensors checksum mismatch"):
        LeanBaseline.load(folder)


def test_baseline_without_template_runs_its_whole_graph(tmp_path: Path) -> None:
    baseline, folder = _asset_baseline(tmp_path, "p1", 1)
    meta = json.loads((folder / "baseline.json").read_text())
    for key in ("onnx_template", "onnx_weights"):
        del meta[key], meta[f"{key}_sha256"]
    (folder / "baseline.json").write_text(json.dumps(meta))
    lean = LeanBaseline.load(folder)
    assert lean.weights is None
    x = _windows(4, seed=5)
    expected = Predictor(load_bundle(PUMP)).predict(x, [baseline] * 4).anomaly_score
    assert expected is not None
    assert np.max(np.abs(lean.score(x) - expected)) <= 1e-4
    (folder / "autoencoder.onnx").write_bytes(b"\x00" + (folder / "autoencoder.onnx").read_bytes())
    with pytest.raises(ModelError, match=r"autoencoder\.onnx checksum mismatch"):
        LeanBaseline.load(folder)


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "pump"
    shutil.copytree(PUMP, target)
    return target


def test_an_altered_graph_is_refused(tmp_path: Path) -> None:
    bundle = _copy(tmp_path)
    graph = bundle / "anomaly.onnx"
    data = bytearray(graph.read_bytes())
    data[-5] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"anomaly\.onnx does not match its sha256"):
        load_lean_bundle(bundle)


def test_a_graph_swapped_with_its_checksum_is_refused_by_the_golden_windows(
    tmp_path: Path,
) -> None:
    bundle = _copy(tmp_path)
    # Someone replaces the graph and rewrites every checksum: only the golden windows
    # can tell that it no longer computes what torch did.
    graph = bundle / "anomaly.onnx"
    graph.write_bytes(quantize_int8(graph.read_bytes()))
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"]["anomaly.onnx"] = sha256_file(graph)
    (bundle / MANIFEST).write_text(json.dumps(seal(manifest)))
    with pytest.raises(BundleError, match="does not reproduce the golden windows"):
        load_lean_bundle(bundle)


def test_int8_export_is_smaller_and_within_its_tolerance(tmp_path: Path) -> None:
    report = export_bundle(PUMP, tmp_path / "int8", quantize="int8", speed_seconds=0)
    fp32 = sum((PUMP / n).stat().st_size for n in ("rul.onnx", "anomaly.onnx"))
    int8 = report.sizes["rul.onnx"] + report.sizes["anomaly.onnx"]
    assert fp32 / int8 >= 2.4
    assert all(report.max_abs_diff[k] <= report.tolerance[k] for k in report.max_abs_diff)
    lean = load_lean_bundle(tmp_path / "int8")
    assert lean.manifest["onnx"]["quantization"] == "int8-dynamic"


def test_int8_accuracy_change_is_measured_and_recorded(tmp_path: Path, fd001: Path) -> None:
    fd = default_bundle_path("cmapss-fd001")
    report = export_bundle(
        fd, tmp_path / "int8", quantize="int8", speed_seconds=0, cmapss_train=fd001
    )
    accuracy = report.accuracy
    assert accuracy is not None and accuracy.rmse_change is not None
    # The shipped bundle was cross-validated and then trained on every engine: its
    # cuts (10 per engine) come from all 100 training engines.
    training = load_bundle(fd).manifest["training"]
    assert "cross_validation" in training and training["validation_units"] == []
    assert accuracy.rul_windows == 100 * training["config"]["val_cuts_per_unit"]
    assert abs(accuracy.rmse_change) <= 0.3
    recorded = load_lean_bundle(tmp_path / "int8").manifest["onnx"]["int8_accuracy"]
    assert recorded["rul_rmse_int8"] == pytest.approx(accuracy.rul_rmse_int8)


def test_int8_anomaly_f1_on_simulated_faults(tmp_path: Path) -> None:
    from models.datasets import read_simulator_output
    from simulators.dataset import write_dataset

    write_dataset(tmp_path / "sim", 3, 7, fmt="parquet", duration_s=86_400.0)
    tables = read_simulator_output(tmp_path / "sim")
    assert any(t.labels.any() for t in tables)  # faults to find
    report = export_bundle(
        PUMP, tmp_path / "int8", quantize="int8", speed_seconds=0, anomaly_tables=tables
    )
    accuracy = report.accuracy
    assert accuracy is not None and accuracy.f1_change is not None
    assert accuracy.anomaly_rows > 1000
    assert abs(accuracy.f1_change) <= 0.02


def test_export_refuses_to_overwrite_another_bundle(tmp_path: Path) -> None:
    target = _copy(tmp_path)
    with pytest.raises(BundleError, match="already exists"):
        export_bundle(PUMP, target, speed_seconds=0)


def test_the_lean_path_never_imports_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from models.lean import OnnxPredictor\n"
        f"p = OnnxPredictor({str(PUMP)!r})\n"
        "x = np.zeros((4, len(p.sensors), p.window), np.float32) + 1\n"
        "out = p.predict(x)\n"
        "assert out.rul is not None and out.anomaly_score is not None\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_an_own_baseline_scores_its_newest_steps_alike_on_both_backends(tmp_path: Path) -> None:
    samples = _windows(1, seed=3)[0].T.repeat(8, axis=0)
    samples = samples + np.random.default_rng(4).normal(0, 0.01, samples.shape).astype(np.float32)
    own = commission(samples, load_bundle(PUMP), asset="o1", scratch=True, epochs=2)
    assert own.score_steps is not None and own.score_steps < own.window
    export_baseline(own, own.save(tmp_path / "o1"))
    lean = LeanBaseline.load(tmp_path / "o1")
    x = _windows(7, seed=6)
    assert np.max(np.abs(lean.score(x) - own.score(x))) <= 1e-4
    # Only the newest steps count: changing the oldest ones leaves the score as it was.
    older = x.copy()
    older[:, :, : own.window - own.score_steps - 8] *= 3.0
    assert np.max(np.abs(lean.score(older) - lean.score(x))) <= 0.05 * float(lean.score(x).max())
