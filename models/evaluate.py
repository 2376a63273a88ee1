"""Evaluation protocols: C-MAPSS RUL (published FD001 protocol) and labelled-CSV anomaly.

Both return plain dataclasses (``as_dict()`` for JSON); the CLI renders them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import DatasetError, ModelError
from models.bundle import Bundle
from models.commission import baseline_sensor_order, commission, fill_missing
from models.datasets import AssetTable, read_csv_dir
from models.metrics import DetectionCounts, nasa_score, rmse
from models.predictions import member_spread
from models.preprocessing import FloatArray, learnt_sensor_order, load_cmapss, windows_ending_at
from models.scoring import ThresholdRule, alarm_flags
from models.train import last_windows, member_predictions

#: Default number of leading rows per file that form the healthy baseline.
DEFAULT_TRAIN_ROWS = 400


# --------------------------------------------------------------------------- RUL


@dataclass(frozen=True)
class RulEvaluation:
    """Last-window scores of every test unit (truth capped at the bundle's RUL cap)."""

    rmse: float
    nasa_score: float
    units: int
    padded_units: int
    cap: float
    rmse_uncapped_truth: float
    per_unit: list[dict[str, float]] = field(repr=False)
    #: Share of units whose capped true RUL lies in the bundle's interval (None: none).
    interval_coverage: float | None = None
    interval_level: float | None = None

    def as_dict(self, with_units: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "rmse": self.rmse,
            "nasa_score": self.nasa_score,
            "units": self.units,
            "padded_units": self.padded_units,
            "rul_cap": self.cap,
            "rmse_uncapped_truth": self.rmse_uncapped_truth,
            "interval_level": self.interval_level,
            "interval_coverage": self.interval_coverage,
            "protocol": "last window of each test unit; truth = RUL file capped at rul_cap; "
            "units shorter than the window are edge-padded with their first cycle",
        }
        if with_units:
            d["per_unit"] = self.per_unit
        return d


def evaluate_rul_cmapss(bundle: Bundle, test: str | Path, truth: str | Path) -> RulEvaluation:
    """Score ``bundle`` on a C-MAPSS test file and its ``RUL_FD00x.txt`` truth file.

    The published FD001 protocol: one prediction per test unit from its *last* window,
    compared with the true RUL capped at the bundle's cap (125 for the shipped model);
    the NASA score uses the same pairs. Units shorter than the window are edge-padded
    with their first cycle (see :func:`models.preprocessing.pad_front`), never dropped.
    """
    head = bundle.rul
    if head is None:
        raise ModelError(f"bundle {bundle.version} has no RUL model")
    data = load_cmapss(test, truth)
    cols = data.column_indices(bundle.sensors)
    raw = last_windows(data.units, cols, bundle.window)
    members = member_predictions(head.members, head.scaler.transform(raw, axis=1))
    pred = np.clip(members.mean(axis=0), 0.0, head.cap).astype(np.float32)
    true_raw = np.array([u.end_rul for u in data.units])
    true = np.minimum(true_raw, head.cap)
    per_unit = [
        {
            "unit": float(u.unit_id),
            "cycles": float(u.n_cycles),
            "true_rul": float(t),
            "predicted_rul": float(p),
        }
        for u, t, p in zip(data.units, true_raw, pred, strict=True)
    ]
    coverage = None
    if head.interval is not None:
        low, high = head.interval.bounds(pred, member_spread(members), head.cap)
        for row, lo, hi in zip(per_unit, low, high, strict=True):
            row.update(rul_low=float(lo), rul_high=float(hi))
        coverage = float(np.mean((low <= true) & (true <= high)))
    return RulEvaluation(
        rmse=rmse(pred, true),
        nasa_score=nasa_score(pred, true),
        units=len(data.units),
        padded_units=sum(1 for u in data.units if u.n_cycles < bundle.window),
        cap=head.cap,
        rmse_uncapped_truth=rmse(pred, true_raw),
        per_unit=per_unit,
        interval_coverage=coverage,
        interval_level=None if head.interval is None else head.interval.level,
    )


# --------------------------------------------------------------------------- anomaly


@dataclass(frozen=True)
class AnomalyOptions:
    """Options of the labelled-CSV anomaly protocol (mirrors the CLI flags)."""

    time_column: str | None = None
    label_column: str = "anomaly"
    sep: str = ","
    train_rows: int = DEFAULT_TRAIN_ROWS
    sensors: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    rule: ThresholdRule | None = None
    cpu_budget_s: float = 30.0
    seed: int = 0
    #: Fine-tuning epochs of commissioning (upper bound; early stopping and budget apply).
    epochs: int = 60


@dataclass(frozen=True)
class FileResult:
    name: str
    sensors: int
    initialised_from: str
    threshold: float
    counts: DetectionCounts
    unlabelled_rows: int
    #: Rows from the first labelled anomalous row to the first alarm at or after it
    #: (None: no anomaly in the file, or never detected).
    detection_delay_rows: int | None = None
    #: Per row after the baseline: the score of the window ending at it, and whether
    #: that window alone is anomalous (before hysteresis): what the agent records.
    scores: FloatArray | None = field(default=None, repr=False, compare=False)
    anomalous: npt.NDArray[np.bool_] | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.name,
            "sensors": self.sensors,
            "initialised_from": self.initialised_from,
            "threshold": self.threshold,
            "unlabelled_rows": self.unlabelled_rows,
            "detection_delay_rows": self.detection_delay_rows,
            **self.counts.as_dict(),
        }


@dataclass(frozen=True)
class AnomalyEvaluation:
    pooled: DetectionCounts
    files: list[FileResult]
    options: AnomalyOptions
    skipped_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        rule = self.options.rule
        faulty = [f for f in self.files if f.counts.tp + f.counts.fn > 0]
        delays = [f.detection_delay_rows for f in faulty if f.detection_delay_rows is not None]
        return {
            "protocol": "per file: first train_rows rows commission the asset baseline; each "
            "later row gets the alarm flag (threshold + hysteresis) of the window ending at it",
            "train_rows": self.options.train_rows,
            "threshold_rule": rule.to_json() if rule else "bundle default",
            "pooled": {
                "files": len(self.files),
                "files_with_anomalies": len(faulty),
                "files_detected": len(delays),
                "median_detection_delay_rows": float(np.median(delays)) if delays else None,
                **self.pooled.as_dict(),
            },
            "files": [f.as_dict() for f in self.files],
            "skipped_files_without_label": self.skipped_files,
        }


FileProgress = Callable[[int, int, str], None]


def evaluate_asset(bundle: Bundle, table: AssetTable, options: AnomalyOptions) -> FileResult:
    """Commission on ``table``'s first ``train_rows`` rows, then flag every later row."""
    n = len(table)
    if n <= options.train_rows:
        raise DatasetError(
            f"{table.name}: {n} rows, not more than --train-rows {options.train_rows}"
        )
    values = table.values
    # Sensors with no value at all in the baseline cannot be learned: drop them for this file.
    usable = [
        j for j in range(values.shape[1]) if np.isfinite(values[: options.train_rows, j]).any()
    ]
    if not usable:
        raise DatasetError(f"{table.name}: no sensor has a value in the baseline rows")
    # Columns in the order the agent gives a learnt sensor set, so that both train
    # the same network on the same data.
    names = list(learnt_sensor_order(table.sensors[j] for j in usable))
    usable = [table.sensors.index(name) for name in names]
    # Causal fill (carry the last value forward) so no row sees the future.
    filled = fill_missing(values[:, usable])
    baseline = commission(
        filled[: options.train_rows],
        bundle,
        sensors=names,
        asset=table.name,
        rule=options.rule,
        cpu_budget_s=options.cpu_budget_s,
        seed=options.seed,
        epochs=options.epochs,
    )
    ordered = filled[:, baseline_sensor_order(baseline, names)]
    ends = np.arange(options.train_rows, n)
    scores = np.empty(len(ends), dtype=np.float32)
    judged = np.empty(len(ends), dtype=bool)
    chunk = 4096
    for i in range(0, len(ends), chunk):
        windows = windows_ending_at(ordered, ends[i : i + chunk], baseline.window)
        scores[i : i + chunk] = baseline.score(windows)
        judged[i : i + chunk] = baseline.judged(windows)
    flags = alarm_flags(scores, baseline.threshold, baseline.rule, judged)
    known = table.known[options.train_rows :]
    labels = table.labels[options.train_rows :]
    counts = DetectionCounts.from_flags(flags[known], labels[known])
    delay: int | None = None
    onset = np.flatnonzero(labels & known)
    if onset.size:
        hits = np.flatnonzero(flags[onset[0] :])
        delay = int(hits[0]) if hits.size else None
    return FileResult(
        table.name,
        len(names),
        str(baseline.info.get("initialised_from", "")),
        baseline.threshold,
        counts,
        int((~known).sum()),
        delay,
        scores=scores,
        anomalous=judged & (scores > baseline.threshold),
    )


def evaluate_anomaly_tables(
    bundle: Bundle,
    tables: Sequence[AssetTable],
    options: AnomalyOptions,
    progress: FileProgress | None = None,
) -> AnomalyEvaluation:
    results = []
    for k, t in enumerate(tables):
        results.append(evaluate_asset(bundle, t, options))
        if progress is not None:
            progress(k + 1, len(tables), t.name)
    pooled = DetectionCounts(0, 0, 0, 0)
    for r in results:
        pooled = pooled + r.counts
    return AnomalyEvaluation(pooled, results, options)


def evaluate_anomaly_csv(
    bundle: Bundle,
    csv_dir: str | Path,
    options: AnomalyOptions,
    progress: FileProgress | None = None,
) -> AnomalyEvaluation:
    """The generic labelled-CSV protocol over every CSV file of ``csv_dir``.

    Each file is one asset. Its first ``train_rows`` rows commission a baseline (from the
    bundle's fleet autoencoder when the file's sensors are the bundle's, from scratch
    otherwise). Every later row gets the alarm flag of the window ending at it (windows
    reach back into baseline rows; hysteresis per :mod:`models.scoring`). Missing values
    are carried forward (leading gaps take the first value). Rows without a label are
    not scored. Precision, recall, F1, FAR and MAR are pooled over all scored rows and
    reported per file.
    """
    skipped: list[str] = []
    tables = read_csv_dir(
        csv_dir,
        time_column=options.time_column,
        label_column=options.label_column,
        sep=options.sep,
        sensors=options.sensors,
        exclude=options.exclude,
        skipped=skipped,
    )
    result = evaluate_anomaly_tables(bundle, tables, options, progress)
    return replace(result, skipped_files=skipped)
