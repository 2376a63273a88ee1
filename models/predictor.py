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

import contextlib
from pathlib import Path

import torch

from agent.errors import ModelError
from models.batch_predictor import BatchPredictor
from models.bundle import Bundle, load_bundle
from models.commission import AssetBaseline, score_windows
from models.predictions import BoolArray, Predictions, pad_to_bucket
from models.preprocessing import FloatArray

__all__ = ["BoolArray", "Predictions", "Predictor", "pad_to_bucket"]


class Predictor(BatchPredictor[AssetBaseline]):
    """The scoring path (:class:`models.batch_predictor.BatchPredictor`) on torch.

    ``threads`` is applied with ``torch.set_num_threads`` (a process-wide torch setting)
    when the predictor is built; 1 is right for a 2-core gateway where the event loop
    needs the other core. Not thread-safe: call ``predict`` from one thread.
    """

    def __init__(self, bundle: Bundle | str | Path, *, threads: int = 1) -> None:
        self._bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        if threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        torch.set_num_threads(threads)
        for m in self._modules():
            m.eval()

    @property
    def bundle(self) -> Bundle:
        return self._bundle

    def _modules(self) -> list[torch.nn.Module]:
        mods: list[torch.nn.Module] = []
        if self.bundle.rul is not None:
            mods.extend(self.bundle.rul.members)
        if self.bundle.anomaly is not None:
            mods.append(self.bundle.anomaly.model)
        return mods

    def _running(self) -> contextlib.AbstractContextManager[object]:
        return torch.inference_mode()

    def _rul_outputs(
        self, scaled: FloatArray, members: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        head = self.bundle.rul
        assert head is not None
        xt = torch.from_numpy(scaled)
        outs = [m(xt) for m in head.members]
        acc = outs[0]
        for o in outs[1:]:
            acc = acc + o
        mean: FloatArray = (acc / len(head.members)).numpy()
        return mean, torch.stack(outs).numpy() if members else None

    def _fleet_scores(self, raw: FloatArray) -> FloatArray:
        fleet = self.bundle.anomaly
        assert fleet is not None
        return score_windows(fleet.model, fleet.scaler, fleet.reference, raw)
