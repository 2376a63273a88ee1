"""From reconstruction error to an alarm: normalisation, threshold rule, hysteresis.

The rule, in one place so that the manifest, commissioning and evaluation agree:

1. Healthy windows are split in time: the autoencoder trains on the earlier part and
   never sees the later, *held-out* part (a threshold set on training windows sits too
   low because the model has memorised them).
2. ``reference`` = median raw error of the held-out windows; the anomaly score of any
   window is ``raw_error / reference``, so healthy data sits near 1.0.
3. ``threshold = max(min_threshold, margin * quantile_q(held-out scores))``.
4. A window is *judged* only while the machine runs, when the bundle names a run
   condition (:class:`RunCondition`: e.g. speed at least 20 % of the asset's baseline
   level over the whole window). A stopped or ramping machine is outside every healthy
   baseline, and condition monitoring does not assess it; the alarm state is held.
5. A judged window is *anomalous* when its score exceeds the threshold; an *alarm* (what the
   evaluation flags and the agent should alert on) needs ``on_count`` anomalous windows
   in a row and clears after ``off_count`` windows in a row below
   ``off_ratio * threshold``. The hysteresis absorbs single noisy windows and keeps an
   alarm from chattering around the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import ModelError


@dataclass(frozen=True)
class ThresholdRule:
    """How the threshold is derived from held-out healthy scores (see module docs)."""

    quantile: float = 0.99
    margin: float = 1.5
    min_threshold: float = 2.0
    holdout_fraction: float = 0.25
    on_count: int = 3
    off_count: int = 5
    off_ratio: float = 0.8

    def __post_init__(self) -> None:
        if not 0.5 <= self.quantile <= 1.0:
            raise ModelError(f"threshold quantile must be in [0.5, 1], got {self.quantile}")
        if self.margin < 1.0 or self.min_threshold <= 0:
            raise ModelError("threshold margin must be >= 1 and min_threshold > 0")
        if not 0.05 <= self.holdout_fraction <= 0.5:
            raise ModelError("holdout_fraction must be in [0.05, 0.5]")
        if self.on_count < 1 or self.off_count < 1 or not 0 < self.off_ratio <= 1:
            raise ModelError("hysteresis needs on_count >= 1, off_count >= 1, 0 < off_ratio <= 1")

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)
        d["description"] = (
            "score = raw_error / median(held-out raw_error); threshold = max(min_threshold, "
            "margin * quantile(held-out scores)); alarm after on_count windows above the "
            "threshold, cleared after off_count windows below off_ratio * threshold"
        )
        return d

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ThresholdRule:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in obj.items() if k in names})


@dataclass(frozen=True)
class Calibration:
    reference: float
    threshold: float
    holdout_windows: int
    holdout_quantile_score: float


def calibrate(raw_holdout_errors: npt.ArrayLike, rule: ThresholdRule) -> Calibration:
    """Apply steps 2-3 of the module rule to held-out raw errors."""
    e = np.asarray(raw_holdout_errors, dtype=np.float64)
    e = e[np.isfinite(e)]
    if e.size == 0:
        raise ModelError("no held-out healthy windows to calibrate the threshold on")
    reference = float(max(np.median(e), 1e-12))
    q = float(np.quantile(e / reference, rule.quantile))
    return Calibration(reference, max(rule.min_threshold, rule.margin * q), int(e.size), q)


@dataclass(frozen=True)
class RunCondition:
    """When a window may be judged: ``sensor`` stays at or above ``min_fraction`` of its
    baseline level (median over the baseline) for the whole window."""

    sensor: str
    min_fraction: float = 0.2

    def to_json(self) -> dict[str, Any]:
        return {"sensor": self.sensor, "min_fraction": self.min_fraction}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> RunCondition | None:
        if not obj:
            return None
        return cls(str(obj["sensor"]), float(obj.get("min_fraction", 0.2)))

    def judged(
        self, windows: npt.ArrayLike, sensors: Sequence[str], level: float
    ) -> npt.NDArray[np.bool_]:
        """One flag per raw window ``(B, S, W)``: may this window be judged?"""
        x = np.asarray(windows)
        if self.sensor not in sensors:
            return np.ones(len(x), dtype=bool)
        j = list(sensors).index(self.sensor)
        flags: npt.NDArray[np.bool_] = x[:, j, :].min(axis=1) >= self.min_fraction * level
        return flags


def judged_windows(
    condition: RunCondition | None,
    level: float | None,
    windows: npt.ArrayLike,
    sensors: Sequence[str],
) -> npt.NDArray[np.bool_]:
    """Per raw window: is the machine running (an asset's run condition at its learnt
    ``level``), so that its score may be judged? Every window without a condition."""
    if condition is None or level is None:
        return np.ones(len(np.asarray(windows)), dtype=bool)
    return condition.judged(windows, sensors, level)


class Hysteresis:
    """Stateful alarm filter for one asset (see steps 4-5 of the module docs).

    The agent keeps one per asset and feeds it each new window score in time order.
    """

    def __init__(self, threshold: float, rule: ThresholdRule) -> None:
        self.threshold = threshold
        self.rule = rule
        self.active = False
        self._above = 0
        self._below = 0

    def update(self, score: float, judged: bool = True) -> bool:
        """Feed one score; returns whether the alarm is active after it.

        A window that is not judged (machine not running) leaves the state unchanged.
        """
        if not judged:
            return self.active
        if self.active:
            self._below = self._below + 1 if score < self.rule.off_ratio * self.threshold else 0
            if self._below >= self.rule.off_count:
                self.active, self._below, self._above = False, 0, 0
        else:
            self._above = self._above + 1 if score > self.threshold else 0
            if self._above >= self.rule.on_count:
                self.active, self._above, self._below = True, 0, 0
        return self.active


def alarm_flags(
    scores: npt.ArrayLike,
    threshold: float,
    rule: ThresholdRule,
    judged: npt.ArrayLike | None = None,
) -> npt.NDArray[np.bool_]:
    """Run :class:`Hysteresis` over a score sequence; one flag per score."""
    h = Hysteresis(threshold, rule)
    s = np.asarray(scores, dtype=np.float64)
    j = np.ones(len(s), dtype=bool) if judged is None else np.asarray(judged, dtype=bool)
    return np.array([h.update(float(v), bool(k)) for v, k in zip(s, j, strict=True)], dtype=bool)
