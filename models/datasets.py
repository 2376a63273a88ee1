"""Reading labelled per-asset tables: simulator output and generic CSV directories.

Two sources feed anomaly training and evaluation:

* simulator output (``telemetry.parquet`` / ``telemetry.csv`` written by
  ``simulators.dataset.write_dataset``): one table with an ``asset`` column, a
  ``fault`` column (``none`` when healthy) and an optional ``sensor_fault`` column;
* a directory of CSV files, one file per asset, with a time column and a label column
  (non-zero / true = anomalous), the format ``evaluate anomaly`` scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import pandas as pd

from agent.errors import DatasetError

BoolArray = npt.NDArray[np.bool_]
F64Array = npt.NDArray[np.float64]

#: Label strings read as "normal" in a label column (case-insensitive); anything else
#: non-empty is anomalous. Numbers: 0 is normal, anything else anomalous.
NORMAL_LABELS = frozenset({"", "0", "0.0", "false", "normal", "ok", "none", "healthy", "no"})
#: Simulator columns that are ground truth, not sensors.
SIMULATOR_TRUTH_COLUMNS = ("asset", "ts", "fault", "rul", "sensor_fault")


@dataclass(frozen=True)
class AssetTable:
    """One asset's samples in time order: raw values ``(time, sensors)`` and labels.

    ``labels`` is ``None`` where unknown; ``known`` says which rows have a label.
    """

    name: str
    sensors: tuple[str, ...]
    values: F64Array
    labels: BoolArray
    known: BoolArray
    rul: F64Array | None = None

    def __len__(self) -> int:
        return int(self.values.shape[0])


def parse_labels(column: pd.Series) -> tuple[BoolArray, BoolArray]:
    """``(anomalous, known)`` per row of a label column (numbers, booleans or words)."""
    import pandas as pd  # lazily: the agent loads this module without pandas

    if pd.api.types.is_bool_dtype(column):
        vals = column.to_numpy(dtype=bool)
        return vals, np.ones(len(vals), dtype=bool)
    numeric = pd.to_numeric(column, errors="coerce")
    if numeric.notna().sum() == column.notna().sum():
        known = numeric.notna().to_numpy()
        return (numeric.fillna(0).to_numpy() != 0) & known, known
    text = column.astype("string").str.strip().str.lower()
    known = column.notna().to_numpy()
    anomalous = ~text.fillna("").isin(NORMAL_LABELS).to_numpy()
    return anomalous & known, known


def sensor_columns(
    frame: pd.DataFrame,
    *,
    reserved: Sequence[str],
    sensors: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> list[str]:
    """Numeric sensor columns: ``sensors`` if given, else every numeric column not reserved
    or excluded. A text column counts as numeric when at least 90 % of its filled cells parse."""
    import pandas as pd  # lazily: the agent loads this module without pandas

    if sensors:
        missing = [s for s in sensors if s not in frame.columns]
        if missing:
            raise DatasetError(f"sensor column(s) not found: {', '.join(missing)}")
        return list(sensors)
    skip = set(reserved) | set(exclude)
    out = []
    for c in frame.columns:
        if c in skip:
            continue
        col = frame[c]
        if pd.api.types.is_bool_dtype(col):
            continue
        if pd.api.types.is_numeric_dtype(col):
            out.append(str(c))
            continue
        parsed = pd.to_numeric(col, errors="coerce")
        filled = col.notna().sum()
        if filled and parsed.notna().sum() >= 0.9 * filled:
            out.append(str(c))
    return out


def _order_by_time(frame: pd.DataFrame, time_column: str | None) -> pd.DataFrame:
    import pandas as pd  # lazily: the agent loads this module without pandas

    if time_column is None:
        return frame
    if time_column not in frame.columns:
        raise DatasetError(f"time column {time_column!r} not found")
    t = frame[time_column]
    key = pd.to_numeric(t, errors="coerce")
    if key.isna().any():
        key = pd.to_datetime(t, errors="coerce", utc=True, format="mixed")
    if key.isna().any():
        return frame  # unparseable times: trust the file's row order
    return frame.assign(_order=key).sort_values("_order", kind="stable").drop(columns="_order")


def read_labelled_csv(
    path: str | Path,
    *,
    time_column: str | None,
    label_column: str,
    sep: str = ",",
    sensors: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> AssetTable:
    """One asset from one CSV file (see module docs); missing values stay NaN here."""
    import pandas as pd  # lazily: the agent loads this module without pandas

    p = Path(path)
    try:
        frame = pd.read_csv(p, sep=sep)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DatasetError(f"cannot read {p} as CSV (sep {sep!r}): {exc}") from exc
    if label_column not in frame.columns:
        raise DatasetError(
            f"{p.name}: label column {label_column!r} not found "
            f"(columns: {', '.join(map(str, frame.columns))}; check --sep)"
        )
    frame = _order_by_time(frame, time_column)
    reserved = [label_column] + ([time_column] if time_column else [])
    cols = sensor_columns(frame, reserved=reserved, sensors=sensors, exclude=exclude)
    if not cols:
        raise DatasetError(f"{p.name}: no numeric sensor columns")
    values = frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    labels, known = parse_labels(frame[label_column])
    return AssetTable(p.stem, tuple(cols), values, labels, known)


def read_csv_dir(
    directory: str | Path,
    *,
    time_column: str | None,
    label_column: str,
    sep: str = ",",
    sensors: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    skipped: list[str] | None = None,
) -> list[AssetTable]:
    """Every ``*.csv`` under ``directory`` (recursively, sorted by path), one asset each.

    Files without the label column (e.g. a dataset's separate anomaly-free recording)
    cannot be scored: they are left out and their names appended to ``skipped``. If no
    file has the label column, that is an error.
    """
    d = Path(directory)
    if not d.is_dir():
        raise DatasetError(f"CSV directory not found: {d}")
    files = sorted(d.rglob("*.csv"))
    if not files:
        raise DatasetError(f"no .csv files under {d}")
    tables = []
    for f in files:
        if label_column not in _header(f, sep):
            if skipped is not None:
                skipped.append(str(f.relative_to(d)))
            continue
        t = read_labelled_csv(
            f,
            time_column=time_column,
            label_column=label_column,
            sep=sep,
            sensors=sensors,
            exclude=exclude,
        )
        rel = f.relative_to(d).with_suffix("")
        tables.append(AssetTable(str(rel), t.sensors, t.values, t.labels, t.known, t.rul))
    if not tables:
        raise DatasetError(
            f"no CSV file under {d} has the label column {label_column!r} (check --sep)"
        )
    return tables


def _header(path: Path, sep: str) -> list[str]:
    import pandas as pd  # lazily: the agent loads this module without pandas

    try:
        return [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns]
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DatasetError(f"cannot read {path} as CSV (sep {sep!r}): {exc}") from exc


def read_simulator_output(path: str | Path) -> list[AssetTable]:
    """Per-asset tables from a simulator dataset directory or its telemetry file.

    Labels: a row is anomalous when a machine fault is active (``fault != "none"``) or a
    sensor misreports (``sensor_fault`` non-empty). ``rul`` is kept (seconds, inf for
    assets that never fail).
    """
    import pandas as pd  # lazily: the agent loads this module without pandas

    p = Path(path)
    if p.is_dir():
        candidates = [p / "telemetry.parquet", p / "telemetry.csv"]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise DatasetError(f"{p} has no telemetry.parquet or telemetry.csv")
        p = found[0]
    if not p.is_file():
        raise DatasetError(f"simulator dataset not found: {p}")
    try:
        frame = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read simulator dataset {p}: {exc}") from exc
    if "asset" not in frame.columns or "fault" not in frame.columns:
        raise DatasetError(f"{p} lacks the simulator's asset/fault columns")
    cols = [
        str(c)
        for c in frame.columns
        if c not in SIMULATOR_TRUTH_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])
    ]
    tables = []
    for asset, g in frame.groupby("asset", sort=True):
        if "ts" in g.columns:
            g = g.sort_values("ts", kind="stable")
        bad = g["fault"].astype(str).str.lower() != "none"
        if "sensor_fault" in g.columns:
            bad |= g["sensor_fault"].fillna("").astype(str) != ""
        rul = g["rul"].to_numpy(dtype=np.float64) if "rul" in g.columns else None
        tables.append(
            AssetTable(
                str(asset),
                tuple(cols),
                g[cols].to_numpy(dtype=np.float64),
                bad.to_numpy(),
                np.ones(len(g), dtype=bool),
                rul,
            )
        )
    return tables


def write_labelled_csv_dir(
    tables: Sequence[AssetTable],
    out_dir: str | Path,
    *,
    label_column: str = "anomaly",
    time_step_s: float = 60.0,
) -> list[Path]:
    """Write one CSV per asset (``ts``, sensors, label 0/1): the ``evaluate anomaly`` input.

    ``ts`` is synthetic (``k * time_step_s``) because only the order matters to the protocol.
    """
    import pandas as pd  # lazily: the agent loads this module without pandas

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in tables:
        frame = pd.DataFrame(t.values, columns=list(t.sensors))
        frame.insert(0, "ts", np.arange(len(t), dtype=np.float64) * time_step_s)
        frame[label_column] = t.labels.astype(int)
        path = out / f"{t.name}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths
