from __future__ import annotations

import math

import pytest

from models.metrics import DetectionCounts, nasa_score, rmse


def test_rmse_by_hand() -> None:
    assert rmse([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]) == pytest.approx(math.sqrt(4 / 3))


def test_nasa_score_by_hand() -> None:
    # early by 13 -> e^1 - 1; late by 10 -> e^1 - 1; exact -> 0
    assert nasa_score([87.0, 110.0, 50.0], [100.0, 100.0, 50.0]) == pytest.approx(2 * (math.e - 1))


def test_detection_counts_by_hand() -> None:
    pred = [1, 1, 0, 0, 1, 0, 0, 0]
    true = [1, 0, 1, 0, 1, 0, 0, 1]
    c = DetectionCounts.from_flags(pred, true)
    assert (c.tp, c.fp, c.tn, c.fn) == (2, 1, 3, 2)
    assert c.precision == pytest.approx(2 / 3)
    assert c.recall == pytest.approx(0.5)
    assert c.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert c.far == pytest.approx(1 / 4)
    assert c.mar == pytest.approx(0.5)
    pooled = c + DetectionCounts(1, 0, 0, 0)
    assert pooled.tp == 3


def test_undefined_rates_are_nan() -> None:
    c = DetectionCounts.from_flags([0, 0], [0, 0])
    assert math.isnan(c.recall) and math.isnan(c.mar)
    assert c.far == 0.0
