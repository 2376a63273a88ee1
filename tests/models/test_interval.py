"""RUL intervals from the ensemble's spread: one arithmetic on torch and ONNX Runtime."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agent.errors import BundleError
from models.bundle import Bundle, RulHead, load_bundle, save_bundle
from models.bundles import default_bundle_path
from models.evaluate import evaluate_rul_cmapss
from models.lean import OnnxPredictor, load_lean_bundle
from models.manifest import MANIFEST, seal
from models.network import RulCNN, RulConfig
from models.onnx_export import export_bundle, golden_windows
from models.predictions import RulInterval
from models.predictor import Predictor
from models.preprocessing import Scaler, windows_ending_at
from tests.models.conftest import make_bundle

SENSORS = ("a_c", "b_bar", "c_rpm")
WINDOW = 12
CAP = 125.0


def interval_bundle(out: Path, scale: float = 1.5, members: int = 3) -> Path:
    """Untrained members with a dilated network, their outputs lifted into the RUL range
    (different seeds disagree: a spread to bound)."""
    cfg = RulConfig(
        n_sensors=3, window=WINDOW, channels=(6, 6), kernel=3, squeeze=2, hidden=8,
        dropout=0.0, dilations=(1, 2),
    )  # fmt: skip
    nets = []
    for seed in range(members):
        torch.manual_seed(seed)
        net = RulCNN(cfg).eval()
        with torch.no_grad():
            last = net.head[-1]
            assert isinstance(last, torch.nn.Linear)
            last.weight.mul_(40.0)
            last.bias.fill_(60.0 + 5.0 * seed)
        nets.append(net)
    scaler = Scaler("minmax", (10.0, 2.0, 1000.0), (5.0, 1.0, 200.0))
    head = RulHead(cfg, tuple(nets), scaler, CAP, "cycles", RulInterval(0.8, scale))
    return save_bundle(
        out, name="iv", sensors=SENSORS, sensor_units=("C", "bar", "rpm"), window=WINDOW,
        hop=1, rul=head, anomaly=None, training={"data": "none"}, metrics={},
    )  # fmt: skip


def test_torch_interval_is_the_mean_plus_minus_scale_times_the_members_spread(
    tmp_path: Path,
) -> None:
    bundle = load_bundle(interval_bundle(tmp_path / "b"))
    assert bundle.rul is not None and bundle.rul.interval == RulInterval(0.8, 1.5)
    x = golden_windows(bundle.rul.scaler, WINDOW, n=20)
    out = Predictor(bundle).predict(x)
    assert out.rul is not None and out.rul_low is not None and out.rul_high is not None
    scaled = torch.from_numpy(bundle.rul.scaler.transform(x, axis=1))
    with torch.inference_mode():
        members = np.stack([m(scaled).numpy() for m in bundle.rul.members])
    sd = members.std(axis=0)
    assert sd.min() > 0.1  # the members do disagree
    np.testing.assert_allclose(out.rul, np.clip(members.mean(axis=0), 0, CAP), atol=1e-4)
    np.testing.assert_allclose(out.rul_low, np.clip(out.rul - 1.5 * sd, 0, CAP), atol=1e-4)
    np.testing.assert_allclose(out.rul_high, np.clip(out.rul + 1.5 * sd, 0, CAP), atol=1e-4)
    assert np.all(out.rul_low <= out.rul) and np.all(out.rul <= out.rul_high)


def test_onnx_interval_agrees_with_torch_and_the_golden_windows_hold_it(tmp_path: Path) -> None:
    path = interval_bundle(tmp_path / "b")
    report = export_bundle(path, speed_seconds=0)
    assert {"rul", "rul_low", "rul_high"} <= set(report.max_abs_diff)
    assert max(report.max_abs_diff.values()) <= 1e-4
    lean = load_lean_bundle(path)  # checks the golden windows, bounds included
    assert lean.rul is not None and lean.rul.interval == RulInterval(0.8, 1.5)
    # The bounds multiply the members' float rounding by up to 1 + scale.
    tolerance = lean.manifest["onnx"]["tolerance"]
    assert tolerance["rul_interval"] == pytest.approx(tolerance["rul"] * 2.5)
    x = golden_windows(lean.rul.scaler, WINDOW, n=50)[::-1].copy() * 1.01
    t_out, o_out = Predictor(load_bundle(path)).predict(x), OnnxPredictor(lean).predict(x)
    for key in ("rul", "rul_low", "rul_high"):
        got, want = getattr(o_out, key), getattr(t_out, key)
        assert got is not None and want is not None
        assert np.max(np.abs(got - want)) <= 1e-4, key

    # A forged scale moves the bounds away from the golden windows: refused.
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["rul"]["interval"]["scale"] = 3.0
    (path / MANIFEST).write_text(json.dumps(seal(manifest), indent=2, sort_keys=True))
    with pytest.raises(BundleError, match=r"rul_low|rul_high"):
        load_lean_bundle(path)


def test_a_bundle_without_an_interval_predicts_no_bounds(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "plain", anomaly=False))
    assert bundle.rul is not None and bundle.rul.interval is None
    out = Predictor(bundle).predict(golden_windows(bundle.rul.scaler, bundle.window, n=4))
    assert out.rul is not None and out.rul_low is None and out.rul_high is None


def test_an_interval_needs_two_members(tmp_path: Path) -> None:
    path = interval_bundle(tmp_path / "b", members=1)
    with pytest.raises(BundleError, match="2 members"):
        load_bundle(path)


def test_evaluate_rul_reports_each_units_interval_and_their_coverage(
    tmp_path: Path, fd001: Path
) -> None:
    shipped = load_bundle(default_bundle_path("cmapss-fd001"))
    assert shipped.rul is not None
    head = replace(shipped.rul, interval=RulInterval(0.8, 4.0))
    path = save_bundle(
        tmp_path / "b", name="iv", sensors=shipped.sensors, sensor_units=shipped.sensor_units,
        window=shipped.window, hop=1, rul=head, anomaly=None, training={}, metrics={},
    )  # fmt: skip
    bundle = load_bundle(path)
    raw = np.loadtxt(fd001)
    test = np.concatenate([raw[raw[:, 0] == u][:cut] for u, cut in ((1, 120), (2, 60), (3, 150))])
    np.savetxt(tmp_path / "test.txt", test, fmt="%.4f")
    ends = [int((raw[:, 0] == u).sum()) - cut for u, cut in ((1, 120), (2, 60), (3, 150))]
    (tmp_path / "RUL.txt").write_text("".join(f"{e}\n" for e in ends))
    r = evaluate_rul_cmapss(bundle, tmp_path / "test.txt", tmp_path / "RUL.txt")
    # The agent's predictor on the same last windows gives the same bounds.
    # (unit 2's 60 cycles are fewer than the window: front-padded, as the agent pads.)
    cols = bundle_columns(bundle)
    windows = np.concatenate(
        [
            windows_ending_at(raw[raw[:, 0] == u][:cut, cols], [cut - 1], shipped.window)
            for u, cut in ((1, 120), (2, 60), (3, 150))
        ]
    )
    live = Predictor(bundle).predict(windows)
    assert live.rul_low is not None and live.rul_high is not None
    np.testing.assert_allclose([u["rul_low"] for u in r.per_unit], live.rul_low, atol=1e-3)
    np.testing.assert_allclose([u["rul_high"] for u in r.per_unit], live.rul_high, atol=1e-3)
    true = np.minimum(ends, CAP)
    inside = [u["rul_low"] <= t <= u["rul_high"] for u, t in zip(r.per_unit, true, strict=True)]
    assert r.interval_level == 0.8 and r.interval_coverage == pytest.approx(np.mean(inside))


def bundle_columns(bundle: Bundle) -> list[int]:
    """Columns of the bundle's sensors in a raw C-MAPSS row (unit, cycle, 3 settings, 21)."""
    from models.preprocessing import CMAPSS_SENSORS

    names = [n for n, _ in CMAPSS_SENSORS]
    return [5 + names.index(s) for s in bundle.sensors]
