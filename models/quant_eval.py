"""What int8 quantization costs in accuracy: the same protocols run on fp32 and int8 graphs.

- RUL: the bundle's own validation set, rebuilt from its manifest (the held-out
  C-MAPSS units, cut at the same seeded random points as in training, last window
  scored, truth capped): RMSE of fp32 and of int8.
- Anomaly: F1 of the fleet model on labelled simulator runs (a fault or a misreporting
  sensor is an anomaly): every row after the first window gets the flag of the window
  ending at it, through the bundle's threshold and hysteresis, pooled over assets.

Both sides run through :class:`models.lean.OnnxPredictor`, exactly as the agent
would, so the figures compare what a gateway would get from each bundle. No torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import DatasetError
from models.datasets import AssetTable
from models.lean import LeanBundle, OnnxPredictor, load_lean_bundle
from models.metrics import DetectionCounts, rmse
from models.preprocessing import FloatArray, load_cmapss, truncate_units, windows_ending_at
from models.scoring import alarm_flags

#: Rows scored per simulated asset (every ``stride``-th row, from the first window on).
ANOMALY_STRIDE = 2


@dataclass(frozen=True)
class AccuracyChange:
    """fp32 and int8 figures side by side (None: the bundle has no such head)."""

    rul_rmse_fp32: float | None = None
    rul_rmse_int8: float | None = None
    rul_windows: int = 0
    anomaly_f1_fp32: float | None = None
    anomaly_f1_int8: float | None = None
    anomaly_rows: int = 0

    @property
    def rmse_change(self) -> float | None:
        if self.rul_rmse_fp32 is None or self.rul_rmse_int8 is None:
            return None
        return self.rul_rmse_int8 - self.rul_rmse_fp32

    @property
    def f1_change(self) -> float | None:
        if self.anomaly_f1_fp32 is None or self.anomaly_f1_int8 is None:
            return None
        return self.anomaly_f1_int8 - self.anomaly_f1_fp32

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rul_rmse_change"] = self.rmse_change
        out["anomaly_f1_change"] = self.f1_change
        return out


def rul_validation_set(bundle: LeanBundle, train_file: Path) -> tuple[FloatArray, FloatArray]:
    """Raw last windows of the bundle's validation cuts and their capped true RUL.

    A bundle trained by cross-validation has no held-out units (the final model saw every
    engine): its cuts are taken from all of the file's engines. They still show what int8
    changes against fp32 on the same windows, though not an unseen-engine accuracy.
    """
    training = bundle.manifest.get("training", {})
    config = training.get("config", {})
    units = training.get("validation_units")
    data = load_cmapss(train_file)
    if not units and "cross_validation" in training:
        units = [u.unit_id for u in data.units]
    if bundle.rul is None or not units or "seed" not in config:
        raise DatasetError(
            f"bundle {bundle.version} records no C-MAPSS validation split",
            hint="accuracy can be compared for bundles trained by `edgewatch train rul`",
        )
    wanted = {int(u) for u in units}
    held_out = [u for u in data.units if u.unit_id in wanted]
    if len(held_out) != len(wanted):
        raise DatasetError(
            f"{train_file} lacks some of the bundle's validation units",
            hint=f"pass the file the bundle was trained on ({training.get('data', {})})",
        )
    cuts = truncate_units(
        held_out,
        int(config["seed"]) + 1,
        cuts_per_unit=int(config.get("val_cuts_per_unit", 1)),
        min_cycles=int(config.get("min_val_rows", 31)),
        per_row=float(config.get("rul_per_row", 1.0)),
    )
    cols = data.column_indices(list(bundle.sensors))
    windows = np.stack(
        [windows_ending_at(u.data[:, cols], [u.n_cycles - 1], bundle.window)[0] for u in cuts]
    )
    truth = np.minimum(np.array([u.end_rul for u in cuts]), bundle.rul.cap)
    return windows.astype(np.float32), truth.astype(np.float32)


def rul_rmse(predictor: OnnxPredictor, windows: FloatArray, truth: FloatArray) -> float:
    rul = predictor.predict(windows).rul
    if rul is None:
        raise DatasetError("the bundle has no RUL model")
    return rmse(rul, truth)


def anomaly_f1(
    predictor: OnnxPredictor, tables: Sequence[AssetTable], stride: int = ANOMALY_STRIDE
) -> tuple[float, int]:
    """Pooled F1 of the fleet anomaly model and the number of rows scored."""
    head = predictor.bundle.anomaly
    if head is None:
        raise DatasetError("the bundle has no fleet anomaly model")
    pooled, rows = DetectionCounts(0, 0, 0, 0), 0
    for table in tables:
        cols = [table.sensors.index(s) for s in predictor.sensors]
        values = table.values[:, cols]
        ends = np.arange(predictor.window - 1, len(table), stride)
        if len(ends) == 0:
            continue
        scores = np.empty(len(ends), dtype=np.float32)
        judged = np.empty(len(ends), dtype=bool)
        for i in range(0, len(ends), 1024):
            out = predictor.predict(windows_ending_at(values, ends[i : i + 1024], predictor.window))
            assert out.anomaly_score is not None and out.judged is not None
            scores[i : i + 1024] = out.anomaly_score
            judged[i : i + 1024] = out.judged
        flags = alarm_flags(scores, head.threshold, head.rule, judged)
        known = table.known[ends]
        pooled = pooled + DetectionCounts.from_flags(flags[known], table.labels[ends][known])
        rows += int(known.sum())
    return pooled.f1, rows


def compare(
    fp32_dir: Path,
    int8_dir: Path,
    *,
    cmapss_train: Path | None = None,
    anomaly_tables: Sequence[AssetTable] | None = None,
) -> AccuracyChange:
    """Run whichever protocols the data given and the bundles' heads allow."""
    fp32 = OnnxPredictor(load_lean_bundle(fp32_dir))
    int8 = OnnxPredictor(load_lean_bundle(int8_dir))
    figures: dict[str, Any] = {}
    if cmapss_train is not None and fp32.bundle.rul is not None:
        windows, truth = rul_validation_set(fp32.bundle, cmapss_train)
        figures |= {
            "rul_rmse_fp32": rul_rmse(fp32, windows, truth),
            "rul_rmse_int8": rul_rmse(int8, windows, truth),
            "rul_windows": len(windows),
        }
    if anomaly_tables and fp32.bundle.anomaly is not None:
        f1_fp32, rows = anomaly_f1(fp32, anomaly_tables)
        f1_int8, _ = anomaly_f1(int8, anomaly_tables)
        figures |= {"anomaly_f1_fp32": f1_fp32, "anomaly_f1_int8": f1_int8, "anomaly_rows": rows}
    return AccuracyChange(**figures)
