"""Fixtures for the models tests: small real bundles and the FD001 training file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.bundle import AnomalyHead, RulHead, save_bundle
from models.network import AutoencoderConfig, ConvAutoencoder, RulCNN, RulConfig
from models.preprocessing import Scaler
from models.scoring import ThresholdRule
from tests.support import REPO

FD001 = REPO.parent / "shared" / "datasets" / "cmapss-fd001" / "train_FD001.txt"
SENSORS = ("temp_c", "vib_rms_mm_s", "current_a")
WINDOW = 16


@pytest.fixture
def fd001() -> Path:
    if not FD001.is_file():
        pytest.skip("FD001 training file not available")
    return FD001


def make_bundle(
    out: Path, *, rul: bool = True, anomaly: bool = True, first_rows: int | None = None
) -> Path:
    """An untrained but complete bundle over three sensors (fast, deterministic)."""
    torch.manual_seed(0)
    n = len(SENSORS)
    scaler = Scaler("zscore", (50.0, 2.0, 10.0), (5.0, 0.5, 1.0))
    rul_head = None
    if rul:
        cfg = RulConfig(n_sensors=n, window=WINDOW, channels=(8, 8), squeeze=2, hidden=8)
        rul_head = RulHead(cfg, (RulCNN(cfg).eval(), RulCNN(cfg).eval()), scaler, 125.0, "cycles")
    ae_head = None
    if anomaly:
        acfg = AutoencoderConfig(n_sensors=n, window=WINDOW, channels=(8, 4), latent=4)
        ae_head = AnomalyHead(acfg, ConvAutoencoder(acfg).eval(), scaler, 0.5, 3.0, ThresholdRule())
    return save_bundle(
        out,
        name="test",
        sensors=SENSORS,
        sensor_units=("degC", "mm/s", "A"),
        window=WINDOW,
        hop=2,
        rul=rul_head,
        anomaly=ae_head,
        training={"data": "none"},
        metrics={"val_rmse": 1.0, "nan_metric": float("nan")},
        first_rows=first_rows,
    )


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle")


def healthy_series(n: int, seed: int = 0) -> np.ndarray:
    """Three correlated sensors around the fixture scaler's levels, with a load cycle."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    load = 0.5 + 0.3 * np.sin(2 * np.pi * t / 97.0)
    temp = 45.0 + 10.0 * load + rng.normal(0, 0.3, n)
    vib = 1.5 + 1.0 * load + rng.normal(0, 0.05, n)
    cur = 8.0 + 4.0 * load + rng.normal(0, 0.1, n)
    return np.stack([temp, vib, cur], axis=1).astype(np.float32)
