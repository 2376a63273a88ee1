"""What a predictor returns, and batch padding: shared by the torch and ONNX backends.

No torch here: the ONNX Runtime agent imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from models.preprocessing import FloatArray

BoolArray = npt.NDArray[np.bool_]


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
