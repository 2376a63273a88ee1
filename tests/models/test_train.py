from __future__ import annotations

from pathlib import Path

import numpy as np

from models.datasets import AssetTable
from models.preprocessing import load_cmapss
from models.train import (
    AnomalyTrainConfig,
    RulTrainConfig,
    prepare_rul,
    train_anomaly_fleet,
    train_rul_cmapss,
)
from tests.models.conftest import healthy_series

TINY = RulTrainConfig(
    epochs=4,
    patience=10,
    max_units=8,
    val_fraction=0.25,
    val_cuts_per_unit=2,
    channels=(8, 8),
    squeeze=4,
    hidden=16,
    batch_size=128,
    dropout=0.0,
)


def test_short_training_lowers_the_loss(fd001: Path) -> None:
    result = train_rul_cmapss(load_cmapss(fd001), TINY)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert len(result.sensors) == 14  # FD001's 7 constant sensors and settings dropped
    assert set(result.train_units).isdisjoint(result.val_units)
    assert result.metrics["val_rmse"] > 0


def test_same_seed_same_metrics(fd001: Path) -> None:
    cfg = RulTrainConfig(**{**TINY.__dict__, "epochs": 2, "max_units": 4})
    a = train_rul_cmapss(load_cmapss(fd001), cfg).metrics
    b = train_rul_cmapss(load_cmapss(fd001), cfg).metrics
    assert a["val_rmse"] == b["val_rmse"]


def test_fleet_autoencoder_is_reproducible() -> None:
    tables = [
        AssetTable(
            f"a{k}",
            ("t", "v", "c"),
            healthy_series(300, k).astype(np.float64),
            np.zeros(300, bool),
            np.ones(300, bool),
        )
        for k in range(3)
    ]
    cfg = AnomalyTrainConfig(
        window=16,
        hop=8,
        epochs=2,
        channels=(4, 4),
        latent=4,
        baseline_rows=(100, 200),
        val_fraction=0.34,
    )
    a = train_anomaly_fleet(tables, cfg)
    b = train_anomaly_fleet(tables, cfg)
    assert a.threshold == b.threshold and a.metrics == b.metrics
    assert a.relative_floor is not None and len(a.relative_floor) == 3


def test_min_rows_trains_on_front_padded_windows_from_that_row_on(fd001: Path) -> None:
    data = load_cmapss(fd001)
    units = list(data.units[:3])
    whole = prepare_rul(data, RulTrainConfig(window=30), units)
    early = prepare_rul(data, RulTrainConfig(window=30, min_rows=10), units)
    # 20 more windows per unit, ending at rows 9..28, each padded with the first row.
    assert len(early.y_train) == len(whole.y_train) + 20 * len(units)
    first = early.x_train[0]
    np.testing.assert_array_equal(first[:, :21], np.repeat(first[:, :1], 21, axis=1))
    assert early.y_train[0] == min(units[0].n_cycles - 10, 125)
    np.testing.assert_array_equal(early.x_train[20], whole.x_train[0])


def test_cosine_huber_and_noise_options_train_and_keep_the_schedule_in_the_final_run(
    fd001: Path,
) -> None:
    from models.cv import train_rul_final

    data = load_cmapss(fd001)
    base = RulTrainConfig(**{**TINY.__dict__, "epochs": 2, "max_units": 4})
    varied = RulTrainConfig(
        **{**base.__dict__, "schedule": "cosine", "loss": "huber", "input_noise": 0.05}
    )
    plain, other = train_rul_cmapss(data, base), train_rul_cmapss(data, varied)
    assert np.isfinite(other.metrics["val_rmse"])
    assert other.history[0]["train_loss"] != plain.history[0]["train_loss"]
    # The final model trains fewer epochs on the folds' cosine curve, not a shorter one.
    final = train_rul_final(data, varied, epochs=1)
    assert final.config.epochs == 1 and final.config.schedule_epochs == varied.epochs
