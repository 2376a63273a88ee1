"""Data preparation shared by training, evaluation, commissioning and inference.

Conventions used throughout ``models``:

* a *series* is a float array shaped ``(time, sensors)``, one row per sample;
* a *window* batch is float32 shaped ``(batch, sensors, window)`` because that is the
  layout ``nn.Conv1d`` wants (channels = sensors);
* scaling is always fitted on training data only and travels with the model as JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from agent.errors import DatasetError

FloatArray = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]

#: RUL above this is "healthy, far from failure": C-MAPSS practice (piece-wise linear target).
DEFAULT_RUL_CAP = 125.0

#: Names and units of the 21 C-MAPSS sensors (Saxena et al. 2008, table 2). Units go
#: into the name so that the agent's "units in names" convention holds.
CMAPSS_SENSORS: tuple[tuple[str, str], ...] = (
    ("s01_t2_fan_inlet_temp_degR", "degR"),
    ("s02_t24_lpc_outlet_temp_degR", "degR"),
    ("s03_t30_hpc_outlet_temp_degR", "degR"),
    ("s04_t50_lpt_outlet_temp_degR", "degR"),
    ("s05_p2_fan_inlet_pressure_psia", "psia"),
    ("s06_p15_bypass_duct_pressure_psia", "psia"),
    ("s07_p30_hpc_outlet_pressure_psia", "psia"),
    ("s08_nf_fan_speed_rpm", "rpm"),
    ("s09_nc_core_speed_rpm", "rpm"),
    ("s10_epr_engine_pressure_ratio", "ratio"),
    ("s11_ps30_hpc_static_pressure_psia", "psia"),
    ("s12_phi_fuel_flow_ratio_pps_psi", "pps/psi"),
    ("s13_nrf_corrected_fan_speed_rpm", "rpm"),
    ("s14_nrc_corrected_core_speed_rpm", "rpm"),
    ("s15_bpr_bypass_ratio", "ratio"),
    ("s16_far_burner_fuel_air_ratio", "ratio"),
    ("s17_htbleed_bleed_enthalpy", "1"),
    ("s18_nf_dmd_demanded_fan_speed_rpm", "rpm"),
    ("s19_pcnfr_dmd_demanded_corrected_fan_speed_rpm", "rpm"),
    ("s20_w31_hpt_coolant_bleed_lbm_s", "lbm/s"),
    ("s21_w32_lpt_coolant_bleed_lbm_s", "lbm/s"),
)
CMAPSS_SETTINGS: tuple[tuple[str, str], ...] = (
    ("op_setting_1", "1"),
    ("op_setting_2", "1"),
    ("op_setting_3", "1"),
)
_CMAPSS_COLUMNS = 2 + len(CMAPSS_SETTINGS) + len(CMAPSS_SENSORS)


# --------------------------------------------------------------------------- scaling


@dataclass(frozen=True)
class Scaler:
    """Per-sensor affine scaling ``(x - offset) / scale``, serialisable to JSON.

    ``kind`` records how it was fitted ("zscore" or "minmax") so that a manifest reader
    knows what the numbers mean; applying it is the same affine map either way.
    """

    kind: Literal["zscore", "minmax"]
    offset: tuple[float, ...]
    scale: tuple[float, ...]

    @property
    def n_sensors(self) -> int:
        return len(self.offset)

    @classmethod
    def fit(
        cls,
        data: npt.ArrayLike,
        kind: Literal["zscore", "minmax"] = "zscore",
        *,
        min_scale: float = 1e-6,
        relative_floor: float | Sequence[float] = 0.0,
    ) -> Scaler:
        """Fit on ``data`` shaped ``(samples, sensors)``; NaNs are ignored.

        ``relative_floor`` keeps a sensor that happens to be (nearly) constant in the
        fitting data from turning later noise into huge scaled values: the scale is at
        least ``relative_floor * |offset|`` (and always at least ``min_scale``); give one
        floor per sensor or one for all.
        """
        x = np.asarray(data, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise DatasetError(f"cannot fit a scaler on data shaped {x.shape}")
        with np.errstate(all="ignore"):
            if kind == "zscore":
                offset = np.nanmean(x, axis=0)
                scale = np.nanstd(x, axis=0)
            else:
                offset = np.nanmin(x, axis=0)
                scale = np.nanmax(x, axis=0) - offset
        offset = np.nan_to_num(offset, nan=0.0)
        scale = np.nan_to_num(scale, nan=1.0)
        rel = np.asarray(relative_floor, dtype=np.float64)
        floor = np.maximum(min_scale, rel * np.abs(offset))
        scale = np.maximum(scale, floor)
        return cls(kind, tuple(float(v) for v in offset), tuple(float(v) for v in scale))

    def transform(self, data: npt.ArrayLike, axis: int = -1) -> FloatArray:
        """Scale ``data`` whose sensor axis is ``axis`` (last for series, 1 for windows)."""
        x = np.asarray(data, dtype=np.float32)
        shape = [1] * x.ndim
        shape[axis] = self.n_sensors
        if x.shape[axis] != self.n_sensors:
            raise DatasetError(
                f"scaler expects {self.n_sensors} sensors, got {x.shape[axis]} on axis {axis}"
            )
        off = np.asarray(self.offset, dtype=np.float32).reshape(shape)
        sc = np.asarray(self.scale, dtype=np.float32).reshape(shape)
        return ((x - off) / sc).astype(np.float32, copy=False)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "offset": list(self.offset), "scale": list(self.scale)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Scaler:
        kind = obj.get("kind")
        offset = obj.get("offset")
        scale = obj.get("scale")
        if kind not in ("zscore", "minmax") or not isinstance(offset, list):
            raise DatasetError("scaler JSON needs kind zscore|minmax and an offset list")
        if not isinstance(scale, list) or len(scale) != len(offset):
            raise DatasetError("scaler JSON needs a scale list as long as its offset list")
        values = [float(v) for v in offset] + [float(v) for v in scale]
        if not all(math.isfinite(v) for v in values) or min(float(v) for v in scale) <= 0:
            raise DatasetError("scaler JSON has non-finite values or a non-positive scale")
        return cls(kind, tuple(float(v) for v in offset), tuple(float(v) for v in scale))


# --------------------------------------------------------------------------- sensors


def constant_columns(data: npt.ArrayLike, *, max_distinct: int = 2) -> list[int]:
    """Indices of columns that carry no trend: at most ``max_distinct`` distinct values.

    A plain ``std == 0`` test misses quantised sensors that flicker between two
    readings (C-MAPSS sensor 6), while a relative-std test would drop slow but
    informative sensors such as fan speed (std/mean ~ 3e-5); counting distinct values
    separates the two cases.
    """
    x = np.asarray(data, dtype=np.float64)
    out: list[int] = []
    for j in range(x.shape[1]):
        col = x[:, j]
        col = col[np.isfinite(col)]
        if col.size == 0 or np.unique(col).size <= max_distinct:
            out.append(j)
    return out


def select_sensors(names: Sequence[str], data: npt.ArrayLike) -> list[str]:
    """The names in ``names`` whose columns in ``data`` are not constant (order kept)."""
    drop = set(constant_columns(data))
    return [n for j, n in enumerate(names) if j not in drop]


# --------------------------------------------------------------------------- windows


def pad_front(series: npt.ArrayLike, length: int) -> FloatArray:
    """Edge-pad ``series`` ``(time, sensors)`` at the start up to ``length`` rows.

    Short units are repeated at their first row: a unit that has just started is in
    its early (healthy) state, so repeating that state is the least surprising fill
    and keeps the most recent rows, which carry the signal, at the window's end.
    """
    x = np.asarray(series, dtype=np.float32)
    if x.shape[0] >= length:
        return x
    if x.shape[0] == 0:
        raise DatasetError("cannot pad an empty series")
    pad = np.repeat(x[:1], length - x.shape[0], axis=0)
    return np.concatenate([pad, x], axis=0)


def sliding_windows(series: npt.ArrayLike, window: int, hop: int = 1) -> FloatArray:
    """All windows of ``series`` ``(time, sensors)`` as ``(n, sensors, window)``.

    Windows end at rows ``window-1, window-1+hop, ...``; a series shorter than
    ``window`` is edge-padded (see :func:`pad_front`) and yields exactly one window.
    """
    if window < 1 or hop < 1:
        raise ValueError("window and hop must be >= 1")
    x = pad_front(series, window)
    view = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)  # (n, S, W)
    return np.ascontiguousarray(view[::hop], dtype=np.float32)


def windows_ending_at(series: npt.ArrayLike, ends: npt.ArrayLike, window: int) -> FloatArray:
    """The windows ``(len(ends), sensors, window)`` whose last row is each index of ``ends``.

    Rows before the start of the series are edge-padded with the first row.
    """
    x = np.asarray(series, dtype=np.float32)
    idx = np.asarray(ends, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= x.shape[0]):
        raise IndexError("window end outside the series")
    offsets = np.arange(-window + 1, 1, dtype=np.int64)
    rows = np.clip(idx[:, None] + offsets[None, :], 0, None)  # (n, W)
    return np.ascontiguousarray(x[rows].transpose(0, 2, 1))


def rul_targets(
    n_rows: int, *, cap: float = DEFAULT_RUL_CAP, end_rul: float = 0.0, per_row: float = 1.0
) -> F64Array:
    """Capped RUL per row of a unit with ``n_rows`` rows whose last row has ``end_rul`` left.

    ``per_row`` is the RUL that one row represents (1 cycle for C-MAPSS; 1/60 h for a
    one-minute sample period with RUL in hours).
    """
    rul = end_rul + per_row * np.arange(n_rows - 1, -1, -1, dtype=np.float64)
    return np.minimum(rul, cap)


# --------------------------------------------------------------------------- C-MAPSS


@dataclass(frozen=True)
class Unit:
    """One engine: its id, its rows ``(cycles, columns)`` and RUL after its last row."""

    unit_id: int
    data: F64Array
    end_rul: float = 0.0

    @property
    def n_cycles(self) -> int:
        return int(self.data.shape[0])


@dataclass(frozen=True)
class CmapssData:
    """Run-to-failure units (a C-MAPSS file or any table shaped like one): column names
    (``n_settings`` operating settings first, then sensors) and the units' rows."""

    columns: tuple[str, ...]
    units: tuple[Unit, ...]
    source: str = ""
    units_by_column: dict[str, str] = field(default_factory=dict)
    #: Leading columns that are operating settings, not sensors (3 in C-MAPSS).
    n_settings: int = 3

    def stacked(self) -> F64Array:
        return np.concatenate([u.data for u in self.units], axis=0)

    def column_indices(self, names: Sequence[str]) -> list[int]:
        lookup = {n: i for i, n in enumerate(self.columns)}
        missing = [n for n in names if n not in lookup]
        if missing:
            raise DatasetError(f"C-MAPSS data has no column(s) {', '.join(missing)}")
        return [lookup[n] for n in names]


def load_cmapss(path: str | Path, truth: str | Path | None = None) -> CmapssData:
    """Read any file in the official C-MAPSS format (train_FD00x or test_FD00x).

    Rows: unit, cycle, 3 operational settings, 21 sensors, whitespace separated, no
    header (trailing blanks tolerated). ``truth`` is an ``RUL_FD00x.txt`` file with
    one RUL per unit in unit order; it sets each unit's ``end_rul`` (0 = run to failure).
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"C-MAPSS file not found: {p}")
    # pandas only here: the agent imports this module on the hot path's behalf and
    # should not carry pandas in its memory.
    import pandas as pd

    try:
        frame = pd.read_csv(p, sep=r"\s+", header=None, engine="python")
    except (ValueError, pd.errors.ParserError) as exc:
        raise DatasetError(f"{p} is not a C-MAPSS text file: {exc}") from exc
    frame = frame.dropna(axis=1, how="all")
    if frame.shape[1] != _CMAPSS_COLUMNS:
        raise DatasetError(
            f"{p} has {frame.shape[1]} columns, C-MAPSS has {_CMAPSS_COLUMNS} "
            "(unit, cycle, 3 settings, 21 sensors)"
        )
    values = frame.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise DatasetError(f"{p} contains missing or non-numeric values")
    names = tuple(n for n, _ in CMAPSS_SETTINGS + CMAPSS_SENSORS)
    unit_col = values[:, 0].astype(np.int64)
    order = np.lexsort((values[:, 1], unit_col))
    values, unit_col = values[order], unit_col[order]
    ids, starts = np.unique(unit_col, return_index=True)
    bounds = [*starts.tolist(), len(values)]
    truths: list[float] | None = None
    if truth is not None:
        truths = _read_truth(Path(truth), len(ids))
    units = tuple(
        Unit(
            int(uid),
            values[bounds[k] : bounds[k + 1], 2:],
            truths[k] if truths is not None else 0.0,
        )
        for k, uid in enumerate(ids)
    )
    return CmapssData(names, units, str(p), {n: u for n, u in CMAPSS_SETTINGS + CMAPSS_SENSORS})


def _read_truth(path: Path, n_units: int) -> list[float]:
    if not path.is_file():
        raise DatasetError(f"RUL truth file not found: {path}")
    try:
        vals = [float(tok) for tok in path.read_text().split()]
    except ValueError as exc:
        raise DatasetError(f"{path} must hold one number per line: {exc}") from exc
    if len(vals) != n_units:
        raise DatasetError(
            f"{path} has {len(vals)} RUL values but the test file has {n_units} units"
        )
    return vals


def split_units(
    units: Sequence[Unit], val_fraction: float, seed: int
) -> tuple[list[Unit], list[Unit]]:
    """Split by unit (never by row): returns ``(train, validation)``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(units))
    n_val = max(1, round(len(units) * val_fraction)) if val_fraction > 0 else 0
    val_idx = set(order[:n_val].tolist())
    train = [u for i, u in enumerate(units) if i not in val_idx]
    val = [u for i, u in enumerate(units) if i in val_idx]
    return train, val


def truncate_units(
    units: Iterable[Unit],
    seed: int,
    *,
    cuts_per_unit: int = 1,
    min_cycles: int = 31,
    per_row: float = 1.0,
) -> list[Unit]:
    """Cut run-to-failure units at random points, the way the official test split is made.

    Each cut keeps the first ``L`` cycles, ``L`` uniform in ``[min(min_cycles, T-1), T-1]``
    (``T`` = unit length), and records ``T - L`` as the RUL after the last kept cycle.
    ``min_cycles=31`` matches the shortest official FD001 test unit. Several cuts per unit
    give a steadier estimate from few validation units; each cut is scored independently.
    """
    rng = np.random.default_rng(seed)
    out: list[Unit] = []
    for u in units:
        t = u.n_cycles
        lo = max(1, min(min_cycles, t - 1))
        for _ in range(cuts_per_unit):
            keep = int(rng.integers(lo, t)) if t > 1 else 1
            out.append(Unit(u.unit_id, u.data[:keep], per_row * float(t - keep) + u.end_rul))
    return out


def learnt_sensor_order(names: Iterable[str]) -> tuple[str, ...]:
    """The column order of an asset whose sensors were not given in an order (learnt
    by the agent, or the columns of a file): sorted, so that the agent and the
    offline evaluation build the same network for the same sensors."""
    return tuple(sorted(names))
