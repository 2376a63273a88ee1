"""What a predictor returns, and batch padding: shared by the torch and ONNX backends.

No torch here: the ONNX Runtime agent imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from models.preprocessing import FloatArray

BoolArray = npt.NDArray[np.bool_]

RulT = TypeVar("RulT")
AnomalyT = TypeVar("AnomalyT")


@dataclass(frozen=True)
class LoadedBundle(Generic[RulT, AnomalyT]):
    """A verified, loaded bundle; each backend brings its own heads (networks).
    ``version`` is the model version the agent records."""

    path: Path
    name: str
    version: str
    sensors: tuple[str, ...]
    sensor_units: tuple[str, ...]
    window: int
    hop: int
    rul: RulT | None
    anomaly: AnomalyT | None
    manifest: Mapping[str, Any] = field(repr=False)
    #: Rows before the first estimate (see :func:`models.manifest.min_rows`).
    min_rows: int

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k, h in (("rul", self.rul), ("anomaly", self.anomaly)) if h is not None)


class BaselineShape(Protocol):
    """What a predictor checks of an asset baseline before scoring with it."""

    @property
    def sensors(self) -> tuple[str, ...]: ...

    @property
    def window(self) -> int: ...


@dataclass(frozen=True)
class Predictions:
    """Results for a batch of ``B`` windows, row ``i`` for ``windows[i]``.

    ``anomaly_score``: normalised reconstruction error (healthy ~ 1.0), ``threshold``:
    the threshold that applies to that row (the asset baseline's, or the fleet's),
    ``anomalous``: ``anomaly_score > threshold`` for this window alone - apply
    :class:`models.scoring.Hysteresis` per asset before raising an alert. All three are
    ``None`` when the bundle has no anomaly model and no baselines were given; in a
    bundle without a fleet anomaly model, rows whose baseline is ``None`` get NaN score
    and threshold and ``anomalous`` False (nothing to judge them by yet).
    ``rul``: remaining useful life in ``rul_unit`` (clipped to ``[0, rul_cap]``), or
    ``None`` when the bundle has no RUL model.
    """

    model_version: str
    anomaly_score: FloatArray | None
    threshold: FloatArray | None
    anomalous: BoolArray | None
    #: Per row: was the machine running (bundle's run condition), so the score counts?
    #: Not-judged rows have ``anomalous`` False; pass it to ``Hysteresis.update``.
    judged: BoolArray | None
    rul: FloatArray | None
    rul_unit: str | None
    rul_cap: float | None
    #: Per row, the RUL's interval (see :class:`RulInterval`); None without one.
    rul_low: FloatArray | None = None
    rul_high: FloatArray | None = None


#: Coverage the shipped intervals are calibrated for.
INTERVAL_LEVEL = 0.8


@dataclass(frozen=True)
class RulInterval:
    """A RUL interval from the ensemble's spread: ``mean +- scale x sd`` of the members'
    predictions (population sd), clipped to ``[0, cap]``. ``scale`` is calibrated by
    cross-validation so that ``level`` of held-out last windows fall inside (see
    :mod:`models.cv`); torch and ONNX Runtime share this arithmetic."""

    level: float
    scale: float

    def bounds(
        self, mean: FloatArray, spread: FloatArray, cap: float
    ) -> tuple[FloatArray, FloatArray]:
        # maximum/minimum rather than np.clip: a tenth of the cost on the agent's small
        # batches, where this runs once per window batch.
        half = np.asarray(spread, dtype=np.float32) * np.float32(self.scale)
        m = np.asarray(mean, dtype=np.float32)
        zero, top = np.float32(0.0), np.float32(cap)
        low: FloatArray = np.minimum(np.maximum(m - half, zero), top)
        high: FloatArray = np.minimum(np.maximum(m + half, zero), top)
        return low, high

    def to_json(self) -> dict[str, object]:
        return {
            "level": self.level,
            "scale": self.scale,
            "method": "mean +- scale x population sd of the members' predictions, "
            "clipped to [0, cap]; scale calibrated on cross-validation folds",
        }

    @classmethod
    def from_json(cls, obj: object) -> RulInterval | None:
        if not isinstance(obj, dict):
            return None
        return cls(float(obj["level"]), float(obj["scale"]))


def member_spread(outputs: FloatArray) -> FloatArray:
    """Population sd over members of ``(members, batch)`` predictions -> ``(batch,)``."""
    x = np.asarray(outputs, dtype=np.float32)
    if x.shape[0] == 2:  # the shipped ensembles: the population sd of two is half their gap
        pair: FloatArray = np.abs(x[0] - x[1]) * np.float32(0.5)
        return pair
    n = np.float32(x.shape[0])
    # np.std's generic path costs more than the networks' own run on a single window.
    d = x - x.sum(axis=0) / n
    spread: FloatArray = np.sqrt(np.einsum("ij,ij->j", d, d) / n)
    return spread


def pad_to_bucket(x: FloatArray) -> FloatArray:
    """``x`` with its batch axis padded to the next power of two (last row repeated).

    oneDNN, under torch's CPU convolutions, caches a compiled kernel per input shape
    and never forgets one: batches of every size from 1 to 256 grew a long-running
    agent by 80 MB and more. Powers of two keep that to a handful of shapes, for at
    most twice the (tiny) compute.
    """
    n = len(x)
    size = 1 << max(n - 1, 0).bit_length()
    if size == n or n == 0:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - n, axis=0)])
