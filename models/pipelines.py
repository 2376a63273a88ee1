"""Data -> trained bundle, end to end: what ``edgewatch train`` and the shipped-bundle
retraining call. Each function returns the bundle path and the metrics it stored."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import DatasetError
from models.bundle import AnomalyHead, RulHead, save_bundle
from models.cv import RulCrossValidation, cross_validate_rul, train_rul_final
from models.datasets import AssetTable, read_csv_dir, read_simulator_output
from models.preprocessing import CmapssData, Unit, load_cmapss
from models.scoring import RunCondition, ThresholdRule
from models.train import (
    AnomalyTrainConfig,
    ProgressCallback,
    RulTrainConfig,
    fill_nan,
    train_anomaly_fleet,
    train_rul_cmapss,
)

SECONDS_PER_HOUR = 3600.0


def train_rul_bundle_cmapss(
    data: str | Path,
    out: str | Path,
    config: RulTrainConfig,
    *,
    name: str = "cmapss",
    progress: ProgressCallback | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train a RUL ensemble on a C-MAPSS training file and write a RUL-only bundle."""
    dataset = load_cmapss(data)
    result = train_rul_cmapss(dataset, config, progress)
    head = RulHead(result.network, tuple(result.models), result.scaler, config.cap, "cycles")
    training = {
        "data": {
            "source": Path(data).name,
            "format": "cmapss",
            "units": len(dataset.units),
            "rows": int(sum(u.n_cycles for u in dataset.units)),
        },
        "split": "by unit; validation units truncated at random points, last window scored",
        "train_units": result.train_units,
        "validation_units": result.val_units,
        "config": config.to_json(),
        "history_tail": result.history[-3:],
    }
    path = save_bundle(
        out,
        name=name,
        sensors=result.sensors,
        sensor_units=result.sensor_units,
        window=config.window,
        hop=config.hop,
        rul=head,
        anomaly=None,
        training=training,
        metrics=result.metrics,
        first_rows=config.min_rows,
    )
    return path, result.metrics


def train_rul_bundle_cv(
    data: str | Path,
    out: str | Path,
    config: RulTrainConfig,
    *,
    folds: int,
    name: str = "cmapss",
    progress: ProgressCallback | None = None,
    cv: RulCrossValidation | None = None,
) -> tuple[Path, dict[str, Any], RulCrossValidation]:
    """Cross-validate ``config`` over the file's units, then train it on every unit for
    the epoch count the folds chose and write a RUL-only bundle whose manifest records
    the cross-validation (figures in ``metrics``, folds under ``training``).

    ``cv``: a cross-validation of this very configuration already run (it is
    deterministic, so running it again would give the same figures)."""
    dataset = load_cmapss(data)
    if cv is None:
        cv = cross_validate_rul(dataset, config, folds, progress)
    elif cv.config != replace(config, plateau_on="train") or len(cv.folds) != folds:
        raise DatasetError("the cross-validation given is not of this configuration")
    result = train_rul_final(dataset, config, cv.epochs, progress)
    head = RulHead(
        result.network, tuple(result.models), result.scaler, config.cap, "cycles", cv.interval
    )
    metrics = {**result.metrics, **cv.metrics()}
    training = {
        "data": {
            "source": Path(data).name,
            "format": "cmapss",
            "units": len(dataset.units),
            "rows": int(sum(u.n_cycles for u in dataset.units)),
        },
        "split": f"{folds}-fold cross-validation by unit chose the epochs; "
        "the model is trained on every unit",
        "train_units": result.train_units,
        "validation_units": [],
        "config": result.config.to_json(),
        "cross_validation": cv.as_dict(),
        "history_tail": result.history[-3:],
    }
    path = save_bundle(
        out,
        name=name,
        sensors=result.sensors,
        sensor_units=result.sensor_units,
        window=config.window,
        hop=config.hop,
        rul=head,
        anomaly=None,
        training=training,
        metrics=metrics,
        first_rows=config.min_rows,
    )
    return path, metrics, cv


def load_tables(
    data: str | Path,
    *,
    time_column: str | None = None,
    label_column: str | None = None,
    sep: str = ",",
    sensors: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> list[AssetTable]:
    """Simulator output (directory with telemetry.*, or the file) or a labelled CSV dir."""
    p = Path(data)
    is_sim = (
        p.is_dir() and any((p / f).is_file() for f in ("telemetry.parquet", "telemetry.csv"))
    ) or (p.is_file() and p.name.startswith("telemetry."))
    if is_sim:
        tables = read_simulator_output(p)
        if sensors:
            idx = [tables[0].sensors.index(s) for s in sensors if s in tables[0].sensors]
            tables = [
                AssetTable(t.name, tuple(sensors), t.values[:, idx], t.labels, t.known, t.rul)
                for t in tables
            ]
        return tables
    if label_column is None:
        raise DatasetError(f"{p} is not simulator output; give --label-column for a CSV directory")
    return read_csv_dir(
        p,
        time_column=time_column,
        label_column=label_column,
        sep=sep,
        sensors=sensors,
        exclude=exclude,
    )


def rul_units(tables: Sequence[AssetTable], cap: float) -> CmapssData:
    """Run-to-failure units (RUL in hours) from simulator tables, as a C-MAPSS-like set.

    Assets that never fail get ``end_rul = cap`` (every target at the cap): they teach
    the model what "far from failure" looks like.
    """
    units = []
    for k, t in enumerate(tables):
        if t.rul is None:
            continue
        end = float(t.rul[-1])
        end_h = cap if not math.isfinite(end) else end / SECONDS_PER_HOUR
        units.append(Unit(k + 1, fill_nan(t.values.astype(np.float32)).astype(np.float64), end_h))
    if not units:
        raise DatasetError("no run-to-failure RUL in this data (simulator output has a rul column)")
    sensors = tables[0].sensors
    return CmapssData(tuple(sensors), tuple(units), "simulator", {}, n_settings=0)


def train_fleet_bundle(
    tables: Sequence[AssetTable],
    out: str | Path,
    *,
    name: str,
    anomaly: AnomalyTrainConfig,
    rule: ThresholdRule,
    rul: RulTrainConfig | None = None,
    time_step_s: float = 60.0,
    source: str = "",
    sensor_units: Sequence[str] | None = None,
    inference_hop: int = 1,
    run_condition: RunCondition | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Fleet autoencoder (+ optional RUL head in hours) from per-asset tables -> bundle.

    ``inference_hop`` goes into the manifest as the hop the agent should use (a new
    window every ``hop`` samples); it is the hop the evaluation protocol scores with, and
    the hysteresis counts windows at that hop. Training may use a coarser hop.
    """
    fleet = train_anomaly_fleet(tables, anomaly, rule, progress)
    metrics: dict[str, Any] = {f"anomaly_{k}": v for k, v in fleet.metrics.items()}
    rul_head = None
    training: dict[str, Any] = {
        "data": {
            "source": source,
            "assets": len(tables),
            "rows": int(sum(len(t) for t in tables)),
            "sample_period_s": time_step_s,
        },
        "anomaly": {
            "config": anomaly.to_json(),
            "train_assets": fleet.train_assets,
            "validation_assets": fleet.val_assets,
            "healthy_rows": "rows before each asset's first labelled fault",
            "calibration": "fleet threshold from held-out assets' healthy windows (fleet scaler)",
        },
    }
    if rul is not None:
        dataset = rul_units(tables, rul.cap)
        rul = replace(rul, window=anomaly.window, rul_per_row=time_step_s / SECONDS_PER_HOUR)
        res = train_rul_cmapss(dataset, rul, progress)
        rul_head = RulHead(res.network, tuple(res.models), res.scaler, rul.cap, "h")
        metrics.update({f"rul_{k}": v for k, v in res.metrics.items()})
        training["rul"] = {
            "config": rul.to_json(),
            "unit": "h",
            "target": f"hours to failure, one row = {time_step_s} s, capped at {rul.cap} h",
        }
        if list(res.sensors) != list(fleet.sensors):
            raise DatasetError("RUL sensor selection dropped a sensor; all sensors must vary")
    units = list(sensor_units) if sensor_units else [_unit_from_name(s) for s in fleet.sensors]
    head = AnomalyHead(
        fleet.network,
        fleet.model,
        fleet.scaler,
        fleet.reference,
        fleet.threshold,
        fleet.rule,
        fleet.relative_floor,
        run_condition if run_condition and run_condition.sensor in fleet.sensors else None,
    )
    path = save_bundle(
        out,
        name=name,
        sensors=fleet.sensors,
        sensor_units=units,
        window=anomaly.window,
        hop=inference_hop,
        rul=rul_head,
        anomaly=head,
        training=training,
        metrics=metrics,
        sample_period_s=time_step_s,
    )
    return path, metrics


_UNIT_SUFFIXES = (
    ("_mm_s", "mm/s"),
    ("_m3_h", "m3/h"),
    ("_rpm", "rpm"),
    ("_bar", "bar"),
    ("_c", "degC"),
    ("_a", "A"),
    ("_v", "V"),
    ("_kw", "kW"),
    ("_hz", "Hz"),
)


def _unit_from_name(sensor: str) -> str:
    # Units live in sensor names by convention (DESIGN.md); recover them for the manifest.
    for suffix, unit in _UNIT_SUFFIXES:
        if sensor.endswith(suffix):
            return unit
    return "1"
