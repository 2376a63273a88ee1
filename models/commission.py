"""Baseline learning on the gateway ("commissioning") and the per-asset baseline it yields.

Every machine is a little different, so the anomaly model is fitted to each asset's
own healthy behaviour: :func:`commission` takes a few hundred to a few thousand
healthy samples of one asset and returns an :class:`AssetBaseline` (its scaler, its
fine-tuned autoencoder and its calibrated threshold). The agent calls it from a
worker thread; it is CPU-bounded (``cpu_budget_s``) and never prints.

How the baseline samples are used (``rule.holdout_fraction`` = h, default 0.25):

* ``1 - h`` of the samples fit the scaler and train the
  autoencoder, starting from the bundle's fleet weights when the sensors match the
  bundle's, from scratch otherwise;
* the held-out ``h`` are never trained on: their windows set the score reference
  (healthy = 1.0) and the threshold, see :mod:`models.scoring`. Short baselines hold
  out their last quarter; long ones hold out blocks spread over the recording (see
  :func:`split_baseline`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from safetensors.torch import load_file, save_file

from agent.errors import ModelError
from models.bundle import Bundle
from models.network import AutoencoderConfig, ConvAutoencoder, reconstruction_error
from models.preprocessing import FloatArray, Scaler, sliding_windows, windows_ending_at
from models.scoring import RunCondition, ThresholdRule, calibrate, judged_windows
from models.train import ProgressCallback, fit_autoencoder

#: Default CPU-time budget of one commissioning run (issue 4: <= 30 s on one thread).
DEFAULT_CPU_BUDGET_S = 30.0
#: Fewer healthy samples than this cannot give both training and held-out windows.
MIN_SAMPLES_FACTOR = 3
#: A sensor that barely moved during the baseline still gets this much scale relative to
#: its level, so ordinary later noise is not read as a many-sigma excursion.
RELATIVE_SCALE_FLOOR = 0.01
#: Adam step sizes of commissioning: small when starting from fleet weights, larger from scratch.
FLEET_FINE_TUNE_LR = 1e-4
SCRATCH_LR = 2e-3
#: The scale of a sensor that never moved during the baseline: large enough that no
#: value moves the model (float32 keeps its range), so the sensor is not judged.
CONSTANT_SENSOR_SCALE = 1e12
#: An asset's own model scores the newest ``window // SCORE_STEPS_DIVISOR`` steps.
SCORE_STEPS_DIVISOR = 4
BASELINE_FORMAT = "edgewatch-asset-baseline"
BASELINE_FORMAT_VERSION = 1
_JSON = "baseline.json"
_WEIGHTS = "autoencoder.safetensors"


@dataclass
class AssetBaseline:
    """One asset's healthy reference: scaler, autoencoder, calibrated threshold.

    ``score(windows)`` returns the normalised anomaly score (healthy ~ 1.0) of raw
    windows shaped ``(batch, len(sensors), window)`` in ``sensors`` order. A window is
    anomalous when its score is above ``threshold``; apply :class:`models.scoring.
    Hysteresis` with ``rule`` before alerting.
    """

    sensors: tuple[str, ...]
    window: int
    scaler: Scaler
    model: ConvAutoencoder
    reference: float
    threshold: float
    rule: ThresholdRule
    asset: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    run_condition: RunCondition | None = None
    #: Baseline level (median) of the run-condition sensor.
    run_level: float | None = None
    #: The score averages the error of the window's newest ``score_steps`` steps
    #: (None: all of them); see :func:`models.network.reconstruction_error`.
    score_steps: int | None = None

    def judged(self, windows: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Per raw window: is the machine running, so that the score may be judged?"""
        return judged_windows(self.run_condition, self.run_level, windows, self.sensors)

    def score(self, windows: npt.ArrayLike) -> FloatArray:
        """Normalised anomaly scores ``(batch,)`` of raw windows ``(batch, sensors, window)``."""
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (len(self.sensors), self.window):
            raise ModelError(
                f"baseline expects windows shaped (batch, {len(self.sensors)}, {self.window}), "
                f"got {x.shape}"
            )
        return score_windows(self.model, self.scaler, self.reference, x, self.score_steps)

    def save(self, directory: str | Path) -> Path:
        """Write ``baseline.json`` + ``autoencoder.safetensors`` into ``directory``.

        The JSON is written last (via a temporary name and rename), so a power cut
        leaves either the old complete baseline or the new one, never a mix that loads.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        wtmp = d / (_WEIGHTS + ".tmp")
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(wtmp))
        digest = hashlib.sha256(wtmp.read_bytes()).hexdigest()
        wtmp.replace(d / _WEIGHTS)
        meta = {
            "format": BASELINE_FORMAT,
            "format_version": BASELINE_FORMAT_VERSION,
            "asset": self.asset,
            "sensors": list(self.sensors),
            "window": self.window,
            "scaler": self.scaler.to_json(),
            "network": self.model.config.to_json(),
            "score_reference": self.reference,
            "threshold": self.threshold,
            "threshold_rule": self.rule.to_json(),
            "weights": _WEIGHTS,
            "weights_sha256": digest,
            "run_condition": self.run_condition.to_json() if self.run_condition else None,
            "run_level": self.run_level,
            "score_steps": self.score_steps,
            "info": self.info,
        }
        jtmp = d / (_JSON + ".tmp")
        jtmp.write_text(json.dumps(meta, indent=2) + "\n")
        jtmp.replace(d / _JSON)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> AssetBaseline:
        """Read a baseline written by :meth:`save`; raises :class:`ModelError` if damaged."""
        d = Path(directory)
        try:
            meta = json.loads((d / _JSON).read_text())
            if meta.get("format") != BASELINE_FORMAT:
                raise ModelError(f"{d / _JSON} is not an edgewatch asset baseline")
            if meta.get("format_version") != BASELINE_FORMAT_VERSION:
                raise ModelError(f"{d / _JSON} has unsupported format_version")
            wpath = d / str(meta["weights"])
            if hashlib.sha256(wpath.read_bytes()).hexdigest() != meta["weights_sha256"]:
                raise ModelError(
                    f"asset baseline {d} is damaged (weights checksum mismatch)",
                    hint="commission the asset again",
                )
            model = ConvAutoencoder(AutoencoderConfig.from_json(meta["network"]))
            model.load_state_dict(load_file(str(wpath)), strict=True)
            model.eval()
            return cls(
                sensors=tuple(str(s) for s in meta["sensors"]),
                window=int(meta["window"]),
                scaler=Scaler.from_json(meta["scaler"]),
                model=model,
                reference=float(meta["score_reference"]),
                threshold=float(meta["threshold"]),
                rule=ThresholdRule.from_json(meta["threshold_rule"]),
                asset=meta.get("asset"),
                info=dict(meta.get("info", {})),
                run_condition=RunCondition.from_json(meta.get("run_condition")),
                run_level=None if meta.get("run_level") is None else float(meta["run_level"]),
                score_steps=score_steps_of(meta),
            )
        except ModelError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ModelError(
                f"cannot load asset baseline from {d}: {exc}", hint="commission the asset again"
            ) from exc


def score_steps_of(meta: Mapping[str, Any]) -> int | None:
    """The ``score_steps`` of a baseline's JSON (absent in baselines made before it)."""
    steps = meta.get("score_steps")
    return None if steps is None else int(steps)


def score_windows(
    model: ConvAutoencoder,
    scaler: Scaler,
    reference: float,
    raw: FloatArray,
    steps: int | None = None,
    batch: int = 2048,
) -> FloatArray:
    """Normalised reconstruction error of raw windows ``(B, S, W)`` -> ``(B,)``."""
    x = scaler.transform(raw, axis=1)
    out: list[FloatArray] = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            err = reconstruction_error(model, torch.from_numpy(x[i : i + batch]), steps).numpy()
            out.append(err.astype(np.float32))
    if not out:
        return np.zeros(0, dtype=np.float32)
    return (np.concatenate(out) / np.float32(reference)).astype(np.float32)


def split_baseline(
    n: int, window: int, holdout_fraction: float
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Row ranges ``[start, end)`` for training and for held-out calibration.

    The baseline is cut into ``period * k`` equal blocks (``period = 1/holdout_fraction``)
    and every ``period``-th block is held out. ``k`` grows with the baseline (up to 4)
    while each block still holds two windows, so a long baseline spreads its held-out
    blocks over the whole recording: a daily swing or a stop that happens once is then
    seen in training too, instead of only in a held-out tail where it would inflate the
    threshold. A short baseline (``k = 1``) simply holds out its last block.
    """
    period = max(2, round(1 / holdout_fraction))
    k = max(1, min(4, n // (period * 2 * window)))
    edges = np.linspace(0, n, period * k + 1).round().astype(int)
    train: list[tuple[int, int]] = []
    hold: list[tuple[int, int]] = []
    for i in range(period * k):
        a, b = int(edges[i]), int(edges[i + 1])
        if i % period == period - 1:
            hold.append((a, b))
        elif train and train[-1][1] == a:
            train[-1] = (train[-1][0], b)  # merge neighbours: fewer cut windows
        else:
            train.append((a, b))
    return train, hold


def baseline_drift(rows: FloatArray) -> FloatArray:
    """Per sensor: how far its level moves over ``len(rows)`` at the pace seen in ``rows``.

    The pace is the difference of the medians of the first and the last quarter over
    the distance between their middles: medians, so that noise and short spikes do not
    count as drift.
    """
    n = len(rows)
    q = max(1, n // 4)
    if n - q <= 0:
        return np.zeros(rows.shape[1], dtype=np.float32)
    moved = np.abs(np.median(rows[-q:], axis=0) - np.median(rows[:q], axis=0))
    drift: FloatArray = (moved * n / (n - q)).astype(np.float32)
    return drift


def drift_tolerant(scaler: Scaler, rows: FloatArray) -> Scaler:
    """``scaler`` with each sensor's scale at least the drift seen in the baseline.

    A short baseline of a process that drifts slowly (a machine warming up over its
    first hour) sees only the start of the drift; scaled by the baseline's noise alone,
    the same drift continuing a little later reads as many standard deviations and
    every later window as anomalous. A sensor that moved by D over the baseline is
    scaled by at least D, so drift that goes on at the same pace for as long again
    costs a standard deviation or two, while a sensor that held still keeps its
    sensitivity.
    """
    scale = np.maximum(np.asarray(scaler.scale, dtype=np.float64), baseline_drift(rows))
    return replace(scaler, scale=tuple(float(v) for v in scale))


def without_constant_sensors(
    scaler: Scaler, rows: FloatArray, names: Sequence[str]
) -> tuple[Scaler, list[str]]:
    """``scaler`` with every sensor that never moved in ``rows`` scaled out of the model.

    A value that stayed exactly the same through the whole baseline (a status flag, a
    setpoint, a counter, a label column published by mistake) says nothing about
    healthy variation: scaled by the baseline's spread (zero) any later change would
    read as millions of standard deviations. Scaled out, the sensor is carried but not
    judged; what a change of it does to the other sensors still is. Returns the names.
    """
    still = np.ptp(rows, axis=0) == 0
    if not still.any():
        return scaler, []
    scale = np.where(still, CONSTANT_SENSOR_SCALE, np.asarray(scaler.scale, dtype=np.float64))
    names_still = [n for n, s in zip(names, still, strict=True) if s]
    return replace(scaler, scale=tuple(float(v) for v in scale)), names_still


def fill_missing(samples: npt.ArrayLike) -> FloatArray:
    """Forward-fill then back-fill NaNs per sensor (a gap keeps the last known value).

    Raises :class:`ModelError` if a sensor has no value at all.
    """
    x = np.array(samples, dtype=np.float64)
    if x.ndim != 2:
        raise ModelError(f"samples must be shaped (time, sensors), got {x.shape}")
    x[~np.isfinite(x)] = np.nan
    empty = np.where(np.isnan(x).all(axis=0))[0]
    if empty.size:
        raise ModelError(f"sensor column(s) {empty.tolist()} have no finite value")
    for j in np.where(np.isnan(x).any(axis=0))[0]:
        col = x[:, j]
        idx = np.where(~np.isnan(col), np.arange(len(col)), 0)
        np.maximum.accumulate(idx, out=idx)
        col = col[idx]
        first = np.argmax(~np.isnan(col))
        col[:first] = col[first]
        x[:, j] = col
    return x.astype(np.float32)


def commission(
    samples: npt.ArrayLike,
    bundle: Bundle,
    *,
    sensors: Sequence[str] | None = None,
    asset: str | None = None,
    scratch: bool = False,
    run_condition: RunCondition | None = None,
    rule: ThresholdRule | None = None,
    cpu_budget_s: float = DEFAULT_CPU_BUDGET_S,
    epochs: int = 60,
    learning_rate: float | None = None,
    seed: int = 0,
    threads: int = 1,
    progress: ProgressCallback | None = None,
) -> AssetBaseline:
    """Learn one asset's healthy baseline from ``samples`` ``(time, sensors)`` raw values.

    ``sensors`` names the columns (default: the bundle's sensors, in order). If they are
    the bundle's sensors (any order; columns are reordered to the bundle's), fine-tuning
    starts from the bundle's fleet autoencoder; otherwise a fresh autoencoder with the
    bundle's architecture is trained from scratch (always, with ``scratch``).
    ``run_condition`` (an asset profile's run sensor) makes an own model judge only
    windows where the machine runs; the bundle's condition applies otherwise.
    ``cpu_budget_s`` bounds the CPU time of the calling thread spent training; ``threads``
    is passed to
    ``torch.set_num_threads`` (process-wide). NaNs are forward/back-filled.
    Deterministic for a given ``seed``.
    """
    rule = rule or (bundle.anomaly.rule if bundle.anomaly else ThresholdRule())
    torch.set_num_threads(threads)
    names = tuple(sensors) if sensors is not None else bundle.sensors
    x = fill_missing(samples)
    if x.shape[1] != len(names):
        raise ModelError(f"samples have {x.shape[1]} columns but {len(names)} sensor names")
    fleet = bundle.anomaly
    from_fleet = not scratch and fleet is not None and set(names) == set(bundle.sensors)
    if from_fleet:
        order = [names.index(s) for s in bundle.sensors]
        x, names = x[:, order], bundle.sensors
    window = bundle.window
    n = x.shape[0]
    if n < MIN_SAMPLES_FACTOR * window:
        raise ModelError(
            f"commissioning needs at least {MIN_SAMPLES_FACTOR * window} healthy samples "
            f"(window {window}), got {n}"
        )
    train_parts, hold_parts = split_baseline(n, window, rule.holdout_fraction)
    train_rows = np.concatenate([x[a:b] for a, b in train_parts])
    n_train = len(train_rows)
    floor: float | tuple[float, ...] = RELATIVE_SCALE_FLOOR
    if from_fleet and fleet is not None and fleet.relative_floor is not None:
        # The fleet model was trained in coordinates where each sensor's scale is at
        # least the fleet's typical healthy spread: scale this asset the same way, so a
        # load level the short baseline never visited is not a many-sigma excursion.
        floor = fleet.relative_floor
    scaler = Scaler.fit(train_rows, "zscore", relative_floor=floor)
    constant: list[str] = []
    if not from_fleet:
        scaler = drift_tolerant(scaler, train_rows)
        scaler, constant = without_constant_sensors(scaler, train_rows, names)
    x_train = scaler.transform(
        np.concatenate([sliding_windows(x[a:b], window, 1) for a, b in train_parts]), axis=1
    )
    if all(b - a >= window for a, b in hold_parts):
        hold_raw = np.concatenate([sliding_windows(x[a:b], window, 1) for a, b in hold_parts])
    else:
        # Too few held-out rows for whole windows: let them reach back into training
        # rows; the window's newest rows are still unseen.
        ends = np.concatenate([np.arange(a, b) for a, b in hold_parts])
        hold_raw = windows_ending_at(x, ends, window)

    if from_fleet and fleet is not None:
        model = ConvAutoencoder(fleet.network)
        model.load_state_dict(fleet.model.state_dict())
        # Gentle fine-tuning: the fleet weights know load levels, stops and daily swings
        # that a short baseline never shows; a large step would overwrite that knowledge
        # with the baseline's narrow operating range (more false alarms later).
        lr = learning_rate or FLEET_FINE_TUNE_LR
    else:
        base = fleet.network if fleet is not None else AutoencoderConfig(len(names), window)
        # Seeded init on a forked RNG: deterministic, and the caller's global torch RNG
        # (the agent's) is left as it was.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = ConvAutoencoder(replace(base, n_sensors=len(names), window=window))
        lr = learning_rate or SCRATCH_LR
    t0 = time.thread_time()
    fit = fit_autoencoder(
        model,
        x_train,
        scaler.transform(hold_raw, axis=1),
        epochs=epochs,
        batch_size=64,
        learning_rate=lr,
        patience=8,
        seed=seed,
        cpu_budget_s=cpu_budget_s,
        progress=progress,
        stage="commission",
    )
    # The caller's condition (an asset profile's) for an own model; otherwise the
    # bundle's, where the asset has its sensor.
    bundle_run = fleet.run_condition if fleet is not None else None
    run = bundle_run if from_fleet else (run_condition or bundle_run)
    run_level: float | None = None
    if run is not None and run.sensor in names:
        run_level = float(np.median(train_rows[:, list(names).index(run.sensor)]))
        judged = run.judged(hold_raw, names, run_level)
        if judged.any():
            hold_raw = hold_raw[judged]  # calibrate on windows that will be judged later
    else:
        run = None
    # An asset's own model scores the newest quarter of each window: a new change
    # shows at once and a cleared one stops counting at once. The fleet path keeps
    # the whole window its bundle's threshold rule was calibrated on.
    steps = None if from_fleet else max(1, window // SCORE_STEPS_DIVISOR)
    raw_hold = score_windows(fit.model, scaler, 1.0, hold_raw, steps)
    cal = calibrate(raw_hold, rule)
    info: dict[str, Any] = {
        "samples": int(n),
        "train_samples": int(n_train),
        "holdout_windows": cal.holdout_windows,
        "holdout_quantile_score": cal.holdout_quantile_score,
        "initialised_from": f"fleet:{bundle.version}" if from_fleet else "scratch",
        "epochs_run": fit.epochs_run,
        "stopped_by": fit.stopped_by,
        "cpu_seconds": time.thread_time() - t0,
        "constant_sensors": constant,
        "created_ts": time.time(),
        "seed": seed,
    }
    return AssetBaseline(
        sensors=tuple(names),
        window=window,
        scaler=scaler,
        model=fit.model,
        reference=cal.reference,
        threshold=cal.threshold,
        rule=rule,
        asset=asset,
        info=info,
        run_condition=run,
        run_level=run_level,
        score_steps=steps,
    )


def baseline_sensor_order(baseline: AssetBaseline, names: Sequence[str]) -> list[int]:
    """Column indices that put a table with columns ``names`` into ``baseline.sensors`` order."""
    lookup: Mapping[str, int] = {n: i for i, n in enumerate(names)}
    missing = [s for s in baseline.sensors if s not in lookup]
    if missing:
        raise ModelError(f"data lacks sensor(s) {', '.join(missing)} of the baseline")
    return [lookup[s] for s in baseline.sensors]
