"""Scoring functions, kept free of torch so that they are trivial to test by hand."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: NASA/PHM08 scoring asymmetry: late predictions (d > 0) are punished harder.
NASA_EARLY_DIVISOR = 13.0
NASA_LATE_DIVISOR = 10.0


def rmse(predicted: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Root mean squared error."""
    p = np.asarray(predicted, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"rmse needs two equal non-empty shapes, got {p.shape} and {t.shape}")
    return float(np.sqrt(np.mean((p - t) ** 2)))


def nasa_score(predicted: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """PHM08 scoring function: sum of ``exp(-d/13) - 1`` (early) or ``exp(d/10) - 1`` (late).

    ``d = predicted - truth``; lower is better, 0 is perfect.
    """
    p = np.asarray(predicted, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"nasa_score needs equal shapes, got {p.shape} and {t.shape}")
    d = p - t
    s = np.where(d < 0, np.exp(-d / NASA_EARLY_DIVISOR) - 1.0, np.exp(d / NASA_LATE_DIVISOR) - 1.0)
    return float(np.sum(s))


@dataclass(frozen=True)
class DetectionCounts:
    """Confusion counts of a row-level detector (positive = anomaly)."""

    tp: int
    fp: int
    tn: int
    fn: int

    @classmethod
    def from_flags(cls, predicted: npt.ArrayLike, truth: npt.ArrayLike) -> DetectionCounts:
        p = np.asarray(predicted, dtype=bool)
        t = np.asarray(truth, dtype=bool)
        if p.shape != t.shape:
            raise ValueError(f"flags and labels differ in shape: {p.shape} vs {t.shape}")
        return cls(
            tp=int(np.sum(p & t)),
            fp=int(np.sum(p & ~t)),
            tn=int(np.sum(~p & ~t)),
            fn=int(np.sum(~p & t)),
        )

    def __add__(self, other: DetectionCounts) -> DetectionCounts:
        return DetectionCounts(
            self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn
        )

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        if math.isnan(p) or math.isnan(r) or p + r == 0:
            return 0.0 if (self.tp + self.fp + self.fn) else math.nan
        return 2 * p * r / (p + r)

    @property
    def far(self) -> float:
        """False alarm rate: share of normal rows flagged, ``FP / (FP + TN)``."""
        return _ratio(self.fp, self.fp + self.tn)

    @property
    def mar(self) -> float:
        """Missed alarm rate: share of anomalous rows not flagged, ``FN / (FN + TP)``."""
        return _ratio(self.fn, self.fn + self.tp)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "rows": self.tp + self.fp + self.tn + self.fn,
            "anomalous_rows": self.tp + self.fn,
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "far": self.far,
            "mar": self.mar,
        }


def _ratio(num: int, den: int) -> float:
    # NaN, not 0, when undefined: a file without anomalies has no recall, and pretending
    # it is 0 (or 1) would bias the per-file table.
    return num / den if den else math.nan
