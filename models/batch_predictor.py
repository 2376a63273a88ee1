"""The one scoring path both inference backends run (no torch here).

:class:`BatchPredictor` checks a batch, groups its rows by asset baseline, scales and
pads what the networks see, clips the RUL, adds its interval and judges each window;
a backend (:class:`models.predictor.Predictor` on torch,
:class:`models.lean.OnnxPredictor` on ONNX Runtime) only runs its networks: the
RUL ensemble on scaled windows and the fleet autoencoder on raw ones. Asset
baselines score themselves (``score``) on either backend.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from agent.errors import ModelError
from models.predictions import (
    BaselineShape,
    BoolArray,
    Predictions,
    RulInterval,
    member_spread,
    pad_to_bucket,
)
from models.preprocessing import FloatArray, Scaler
from models.scoring import RunCondition


class RulHeadShape(Protocol):
    @property
    def scaler(self) -> Scaler: ...

    @property
    def cap(self) -> float: ...

    @property
    def unit(self) -> str: ...

    @property
    def interval(self) -> RulInterval | None: ...


class AnomalyHeadShape(Protocol):
    @property
    def scaler(self) -> Scaler: ...

    @property
    def threshold(self) -> float: ...

    @property
    def run_condition(self) -> RunCondition | None: ...


class BundleShape(Protocol):
    """What the scoring path reads of a loaded bundle (either backend's)."""

    @property
    def version(self) -> str: ...

    @property
    def sensors(self) -> tuple[str, ...]: ...

    @property
    def window(self) -> int: ...

    @property
    def hop(self) -> int: ...

    @property
    def rul(self) -> RulHeadShape | None: ...

    @property
    def anomaly(self) -> AnomalyHeadShape | None: ...


class ScoringBaseline(BaselineShape, Protocol):
    """An asset's own baseline as the scoring path uses it."""

    @property
    def threshold(self) -> float: ...

    def score(self, windows: npt.ArrayLike) -> FloatArray: ...

    def judged(self, windows: npt.ArrayLike) -> BoolArray: ...


BaselineT = TypeVar("BaselineT", bound=ScoringBaseline)


class BatchPredictor(ABC, Generic[BaselineT]):
    """Runs a bundle's models on raw windows; one instance per inference thread.

    ``windows[i]`` holds one asset's raw readings ``(sensors, window)`` in the
    bundle's sensor order, oldest first; ``baselines[i]`` is that asset's baseline or
    None. Rows are grouped by baseline object: a batch mixing many assets costs one
    autoencoder pass per distinct baseline (plus one for all fleet rows) and one RUL
    pass for the whole batch. Not thread-safe.
    """

    @property
    @abstractmethod
    def bundle(self) -> BundleShape: ...

    @abstractmethod
    def _rul_outputs(
        self, scaled: FloatArray, members: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """The ensemble's mean ``(B,)`` on scaled, padded windows, and with ``members``
        each member's output ``(members, B)``."""

    @abstractmethod
    def _fleet_scores(self, raw: FloatArray) -> FloatArray:
        """The fleet autoencoder's normalised scores ``(B,)`` of raw, padded windows."""

    def _running(self) -> contextlib.AbstractContextManager[object]:
        """Around a batch's network runs (torch turns autograd off there)."""
        return contextlib.nullcontext()

    @property
    def sensors(self) -> tuple[str, ...]:
        """Sensor order of the windows' axis 1."""
        return self.bundle.sensors

    @property
    def window(self) -> int:
        return self.bundle.window

    @property
    def hop(self) -> int:
        return self.bundle.hop

    @property
    def model_version(self) -> str:
        return self.bundle.version

    def check_baseline(self, baseline: BaselineShape) -> None:
        """Raise :class:`ModelError` unless ``baseline`` can score this bundle's windows."""
        if tuple(baseline.sensors) != self.sensors or baseline.window != self.window:
            raise ModelError(
                f"asset baseline ({len(baseline.sensors)} sensors, window {baseline.window}) "
                f"does not match bundle {self.model_version} ({len(self.sensors)} sensors, "
                f"window {self.window})",
                hint="commission the asset again with this bundle",
            )

    def predict(
        self, windows: npt.ArrayLike, baselines: Sequence[BaselineT | None] | None = None
    ) -> Predictions:
        """Score a batch of raw windows ``(B, len(sensors), window)``.

        ``baselines``: ``None`` (every row uses the fleet model) or one entry per row.
        Raises :class:`ModelError` for a wrong shape, non-finite values, or a baseline
        whose sensors/window differ from the bundle's.
        """
        x = np.ascontiguousarray(windows, dtype=np.float32)
        expected = (len(self.sensors), self.window)
        if x.ndim != 3 or x.shape[1:] != expected:
            raise ModelError(
                f"windows must be shaped (batch, {expected[0]}, {expected[1]}), got {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ModelError("windows contain NaN or infinite values; fill gaps before predicting")
        if baselines is not None and len(baselines) != len(x):
            raise ModelError(f"got {len(baselines)} baselines for {len(x)} windows")
        with self._running():
            rul, spread = self._rul(x)
            score, thr, judged = self._anomaly(x, baselines)
        head = self.bundle.rul
        low = high = None
        if head is not None and head.interval is not None and rul is not None:
            assert spread is not None
            low, high = head.interval.bounds(rul, spread, head.cap)
        return Predictions(
            model_version=self.model_version,
            anomaly_score=score,
            threshold=thr,
            anomalous=None if score is None or thr is None else (score > thr) & judged,
            judged=judged if score is not None else None,
            rul=rul,
            rul_unit=head.unit if head is not None else None,
            rul_cap=head.cap if head is not None else None,
            rul_low=low,
            rul_high=high,
        )

    def _rul(self, x: FloatArray) -> tuple[FloatArray | None, FloatArray | None]:
        """The members' mean clipped to ``[0, cap]``, and their spread when the bundle
        has an interval (otherwise there is nothing to pay for it)."""
        head = self.bundle.rul
        if head is None:
            return None, None
        if len(x) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        n = len(x)
        want = head.interval is not None
        mean, members = self._rul_outputs(head.scaler.transform(pad_to_bucket(x), axis=1), want)
        rul: FloatArray = np.clip(mean[:n], 0.0, head.cap).astype(np.float32)
        if members is None:
            return rul, None
        return rul, member_spread(members[:, :n])

    def _anomaly(
        self, x: FloatArray, baselines: Sequence[BaselineT | None] | None
    ) -> tuple[FloatArray | None, FloatArray | None, BoolArray]:
        fleet = self.bundle.anomaly
        rows: Sequence[BaselineT | None] = baselines if baselines is not None else [None] * len(x)
        judged = np.ones(len(x), dtype=bool)
        if fleet is None and all(b is None for b in rows):
            return None, None, judged
        score = np.full(len(x), np.nan, dtype=np.float32)
        thr = np.full(len(x), np.nan, dtype=np.float32)
        groups: dict[int, tuple[BaselineT | None, list[int]]] = {}
        for i, b in enumerate(rows):
            groups.setdefault(id(b), (b, []))[1].append(i)
        for b, idx in groups.values():
            sel = np.asarray(idx)
            if b is not None:
                self.check_baseline(b)
                score[sel] = b.score(pad_to_bucket(x[sel]))[: len(sel)]
                thr[sel] = b.threshold
                judged[sel] = b.judged(x[sel])
            elif fleet is not None:
                score[sel] = self._fleet_scores(pad_to_bucket(x[sel]))[: len(sel)]
                thr[sel] = fleet.threshold
                if fleet.run_condition is not None and fleet.run_condition.sensor in self.sensors:
                    level = fleet.scaler.offset[self.sensors.index(fleet.run_condition.sensor)]
                    judged[sel] = fleet.run_condition.judged(x[sel], self.sensors, level)
            # rows of assets without a baseline in a bundle without a fleet model stay NaN
        return score, thr, judged
