"""Batched inference over a verified bundle, with optional per-asset baselines.

Usage from the agent's single inference worker thread::

    bundle = load_bundle(path)                  # BundleError if it fails verification
    predictor = Predictor(bundle, threads=1)
    out = predictor.predict(windows, baselines)  # windows: (B, S, W) float32, RAW values
    out.anomaly_score[i], out.threshold[i], out.anomalous[i], out.rul[i]

``windows[i]`` holds the raw (unscaled) readings of one asset, sensors in
``predictor.sensors`` order (the manifest's), oldest sample first, exactly
``predictor.window`` samples. ``baselines[i]`` is that asset's
:class:`~models.commission.AssetBaseline` or ``None``. Rows are grouped by baseline
object, so a batch mixing many assets costs one autoencoder pass per distinct
baseline (plus one for all fleet rows) and one RUL pass for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from agent.errors import ModelError
from models.bundle import Bundle, load_bundle
from models.commission import AssetBaseline, score_windows
from models.predictions import (
    BaselineShape,
    BoolArray,
    Predictions,
    member_spread,
    pad_to_bucket,
)
from models.preprocessing import FloatArray

__all__ = ["BoolArray", "Predictions", "Predictor", "pad_to_bucket"]


class Predictor:
    """Runs a bundle's models on raw windows; one instance per inference thread.

    ``threads`` is applied with ``torch.set_num_threads`` (a process-wide torch setting)
    when the predictor is built; 1 is right for a 2-core gateway where the event loop
    needs the other core. Not thread-safe: call ``predict`` from one thread.
    """

    def __init__(self, bundle: Bundle | str | Path, *, threads: int = 1) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        if threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        torch.set_num_threads(threads)
        for m in self._modules():
            m.eval()

    def _modules(self) -> list[torch.nn.Module]:
        mods: list[torch.nn.Module] = []
        if self.bundle.rul is not None:
            mods.extend(self.bundle.rul.members)
        if self.bundle.anomaly is not None:
            mods.append(self.bundle.anomaly.model)
        return mods

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
        if baseline.sensors != self.sensors or baseline.window != self.window:
            raise ModelError(
                f"asset baseline ({len(baseline.sensors)} sensors, window {baseline.window}) "
                f"does not match bundle {self.model_version} ({len(self.sensors)} sensors, "
                f"window {self.window})",
                hint="commission the asset again with this bundle",
            )

    def predict(
        self,
        windows: npt.ArrayLike,
        baselines: Sequence[AssetBaseline | None] | None = None,
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
        with torch.inference_mode():
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
        """The members' mean clipped to the cap, and their spread (the ONNX graph
        computes the same two outputs, see :mod:`models.onnx_export`)."""
        head = self.bundle.rul
        if head is None:
            return None, None
        if len(x) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        n = len(x)
        xt = torch.from_numpy(head.scaler.transform(pad_to_bucket(x), axis=1))
        outs = [m(xt) for m in head.members]
        acc = outs[0]
        for o in outs[1:]:
            acc = acc + o
        out = (acc / len(head.members)).clamp_(0.0, head.cap)
        rul: FloatArray = out.numpy()[:n].astype(np.float32)
        if head.interval is None:
            return rul, None  # no spread to pay for
        return rul, member_spread(torch.stack(outs).numpy()[:, :n])

    def _anomaly(
        self, x: FloatArray, baselines: Sequence[AssetBaseline | None] | None
    ) -> tuple[FloatArray | None, FloatArray | None, BoolArray]:
        fleet = self.bundle.anomaly
        rows = baselines if baselines is not None else [None] * len(x)
        judged = np.ones(len(x), dtype=bool)
        if fleet is None and all(b is None for b in rows):
            return None, None, judged
        score = np.full(len(x), np.nan, dtype=np.float32)
        thr = np.full(len(x), np.nan, dtype=np.float32)
        groups: dict[int, tuple[AssetBaseline | None, list[int]]] = {}
        for i, b in enumerate(rows):
            groups.setdefault(id(b), (b, []))[1].append(i)
        for b, idx in groups.values():
            sel = np.asarray(idx)
            if b is not None:
                self.check_baseline(b)
                padded = pad_to_bucket(x[sel])
                score[sel] = score_windows(b.model, b.scaler, b.reference, padded, b.score_steps)[
                    : len(sel)
                ]
                thr[sel] = b.threshold
                judged[sel] = b.judged(x[sel])
            elif fleet is not None:
                padded = pad_to_bucket(x[sel])
                score[sel] = score_windows(fleet.model, fleet.scaler, fleet.reference, padded)[
                    : len(sel)
                ]
                thr[sel] = fleet.threshold
                if fleet.run_condition is not None and fleet.run_condition.sensor in self.sensors:
                    level = fleet.scaler.offset[self.sensors.index(fleet.run_condition.sensor)]
                    judged[sel] = fleet.run_condition.judged(x[sel], self.sensors, level)
            # rows of assets without baseline in a bundle without fleet AE stay NaN
        return score, thr, judged
