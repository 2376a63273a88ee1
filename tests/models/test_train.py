from __future__ import annotations

from pathlib import Path

from models.preprocessing import load_cmapss
from models.train import RulTrainConfig, train_rul_cmapss

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
