"""Offline run-to-failure datasets from the pump fleet simulator, no broker needed.

Python API::

    from simulators.dataset import generate_dataset, write_dataset

    df = generate_dataset(assets=20, seed=7)            # pandas.DataFrame
    paths = write_dataset("data/pumps", assets=20, seed=7, fmt="parquet")

``generate_dataset`` returns one row per sample, sorted by asset then time, with
columns:

=====================  ======================================================
``asset``              asset id, ``pump-001`` ...
``ts``                 sample time, UTC epoch seconds (float)
``vib_rms_mm_s`` ...   the seven sensors of :data:`simulators.pump.SENSORS`
``fault``              machine fault active at this sample (``none`` before
                       onset and on healthy assets; see ``MachineFault``)
``rul``                remaining useful life in **seconds** until the asset
                       fails; ``inf`` for assets that never fail in the run
                       (so ``min(rul, cap)`` yields the usual capped target)
``sensor_fault``       ``"<kind>:<sensor>"`` while a sensor misreports, else ""
=====================  ======================================================

Every faulty asset fails inside the run and its rows end at failure (RUL 0 or just
above); healthy assets run the whole ``duration_s``. Degradation is compressed to the
run length (onset in the first half, failure in the second), so the defaults, three
days at one sample per minute, give about 4,300 rows per asset. The same arguments
always give the same frame, bit for bit, and the same frame as every earlier version:
datasets keep the whole-run noise layout (:class:`simulators.physics.NoiseLayout`),
the one the shipped bundle was trained on, where the streaming fleet
(:mod:`simulators.fleet`) draws its noise per block to start fast.

``write_dataset`` writes ``telemetry.parquet`` (or ``.csv``) plus ``assets.json``,
the plan of each asset (fault kind, onset and failure times, pump parameters).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from simulators.pump import (
    DEFAULT_RATE_HZ,
    SENSORS,
    AssetRun,
    AssetSpec,
    NoiseLayout,
    plan_fleet,
    simulate_asset,
)

#: 2026-01-01T00:00:00Z: a fixed start keeps offline datasets reproducible.
DEFAULT_START_TS = 1_767_225_600.0
DEFAULT_DURATION_S = 3 * 86_400.0

DatasetFormat = Literal["parquet", "csv"]
ProgressCallback = Callable[[int, int], None]

COLUMNS: tuple[str, ...] = ("asset", "ts", *SENSORS, "fault", "rul", "sensor_fault")


def simulate_fleet(
    assets: int,
    seed: int,
    *,
    duration_s: float = DEFAULT_DURATION_S,
    rate_hz: float = DEFAULT_RATE_HZ,
    fault_fraction: float = 0.8,
    sensor_fault_fraction: float = 0.0,
    start_ts: float = DEFAULT_START_TS,
    on_progress: ProgressCallback | None = None,
) -> list[AssetRun]:
    """Simulate every asset of a fleet; ``on_progress(done, total)`` after each asset."""
    specs = plan_fleet(
        assets,
        seed,
        duration_s,
        fault_fraction=fault_fraction,
        sensor_fault_fraction=sensor_fault_fraction,
    )
    runs: list[AssetRun] = []
    for spec in specs:
        runs.append(
            simulate_asset(
                spec,
                seed=seed,
                start_ts=start_ts,
                duration_s=duration_s,
                rate_hz=rate_hz,
                # Training data must not move: the shipped bundle's manifest names it.
                noise=NoiseLayout.WHOLE_RUN,
            )
        )
        if on_progress is not None:
            on_progress(len(runs), len(specs))
    return runs


def runs_to_frame(runs: list[AssetRun]) -> pd.DataFrame:
    """One row per sample of every run, in the column order of :data:`COLUMNS`."""
    frames = []
    for run in runs:
        data: dict[str, object] = {"asset": [run.spec.asset] * len(run), "ts": run.ts}
        data.update({s: run.values[s] for s in SENSORS})
        data["fault"] = run.fault
        data["rul"] = run.rul_s
        data["sensor_fault"] = run.sensor_fault
        frames.append(pd.DataFrame(data, columns=list(COLUMNS)))
    if not frames:
        empty = {c: pd.Series(dtype="float64") for c in COLUMNS}
        for c in ("asset", "fault", "sensor_fault"):
            empty[c] = pd.Series(dtype="object")
        return pd.DataFrame(empty, columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)


def generate_dataset(
    assets: int,
    seed: int,
    *,
    duration_s: float = DEFAULT_DURATION_S,
    rate_hz: float = DEFAULT_RATE_HZ,
    fault_fraction: float = 0.8,
    sensor_fault_fraction: float = 0.0,
    start_ts: float = DEFAULT_START_TS,
    on_progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Run-to-failure samples of ``assets`` pumps as one DataFrame (see module docs)."""
    runs = simulate_fleet(
        assets,
        seed,
        duration_s=duration_s,
        rate_hz=rate_hz,
        fault_fraction=fault_fraction,
        sensor_fault_fraction=sensor_fault_fraction,
        start_ts=start_ts,
        on_progress=on_progress,
    )
    return runs_to_frame(runs)


def _spec_record(spec: AssetSpec, run: AssetRun, start_ts: float) -> dict[str, object]:
    fault = spec.fault
    return {
        "asset": spec.asset,
        "fault": fault.kind.value if fault else "none",
        "onset_ts": start_ts + fault.onset_s if fault else None,
        "failure_ts": start_ts + fault.failure_s if fault and run.failed else None,
        "failed": run.failed,
        "samples": len(run),
        "sensor_faults": [
            {
                "kind": sf.kind.value,
                "sensor": sf.sensor,
                "start_ts": start_ts + sf.start_s,
                "end_ts": start_ts + sf.end_s,
            }
            for sf in spec.sensor_faults
        ],
        "params": asdict(run.params),
    }


def write_dataset(
    out_dir: str | Path,
    assets: int,
    seed: int,
    *,
    fmt: DatasetFormat = "parquet",
    duration_s: float = DEFAULT_DURATION_S,
    rate_hz: float = DEFAULT_RATE_HZ,
    fault_fraction: float = 0.8,
    sensor_fault_fraction: float = 0.0,
    start_ts: float = DEFAULT_START_TS,
    on_progress: ProgressCallback | None = None,
) -> list[Path]:
    """Write the dataset to ``out_dir``; returns the files written."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"unknown dataset format {fmt!r}: use parquet or csv")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = simulate_fleet(
        assets,
        seed,
        duration_s=duration_s,
        rate_hz=rate_hz,
        fault_fraction=fault_fraction,
        sensor_fault_fraction=sensor_fault_fraction,
        start_ts=start_ts,
        on_progress=on_progress,
    )
    frame = runs_to_frame(runs)
    data_path = out / f"telemetry.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(data_path, index=False)
    else:
        # repr-exact floats so a CSV round trip returns the same numbers.
        frame.to_csv(data_path, index=False, float_format=None)
    meta = {
        "generator": "edgewatch simulators.dataset",
        "seed": seed,
        "assets": assets,
        "duration_s": duration_s,
        "rate_hz": rate_hz,
        "fault_fraction": fault_fraction,
        "sensor_fault_fraction": sensor_fault_fraction,
        "start_ts": start_ts,
        "rul_unit": "s",
        "sensors": list(SENSORS),
        "rows": len(frame),
        "assets_plan": [_spec_record(r.spec, r, start_ts) for r in runs],
    }
    meta_path = out / "assets.json"
    meta_path.write_text(json.dumps(_finite(meta), indent=2) + "\n", encoding="utf-8")
    return [data_path, meta_path]


def _finite(obj: object) -> object:
    """Replace non-finite floats by None: assets.json must be strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.floating):
        return _finite(float(obj))
    return obj
