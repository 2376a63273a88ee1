"""Replay public datasets over MQTT as if their units were live assets.

Python API::

    from simulators.replay import read_cmapss, read_csv, publish_replay
    from simulators.stream import Pacing

    series = read_cmapss("train_FD001.txt")                 # one Series per engine
    series = read_csv("data/", time_column="time", sep=";", label_columns=["label"])
    report = publish_replay(series, host="127.0.0.1", port=1883, pacing=Pacing.fast())

Timestamps: every series keeps its own spacing, and the whole dataset is shifted so
that its earliest sample is at ``start_ts``, because an agent rejects readings from
years ago. The default start is chosen so that no reading is ever stamped ahead of the
wall clock when it is sent (see :func:`simulators.fleet.default_start_ts`).
``keep_time=True`` publishes the original times instead.

Ground truth (never published) per reading: C-MAPSS gives ``cycle`` and
``rul_cycles`` (last cycle of the unit minus this cycle); CSV gives the label columns.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from agent.errors import DatasetError
from models.preprocessing import CMAPSS_SENSORS, CMAPSS_SETTINGS
from simulators.badinput import BadInputInjector
from simulators.fleet import default_start_ts
from simulators.payloads import DEFAULT_SITE, DEFAULT_TOPIC_TEMPLATE
from simulators.publisher import (
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_RECONNECT_TIMEOUT_S,
    Backend,
    MessageSink,
)
from simulators.stream import (
    BrokerTarget,
    Pacing,
    ProgressCallback,
    RunReport,
    Series,
    StreamStats,
    TruthTable,
    interleave,
    publish_to_broker,
    run_stream,
)

#: Column names of a C-MAPSS text file: unit, cycle, 3 settings, 21 sensors. The sensor
#: names are the ones the models package trains on, units included.
CMAPSS_COLUMNS: tuple[str, ...] = (
    "unit",
    "cycle",
    *(name for name, _ in CMAPSS_SETTINGS),
    *(name for name, _ in CMAPSS_SENSORS),
)
#: Epoch values above this are milliseconds, not seconds (year 5138 in seconds).
_EPOCH_MS_THRESHOLD = 1e11


def read_cmapss(
    path: str | Path,
    *,
    cycle_s: float = 1.0,
    asset_prefix: str = "engine",
    sensors: Sequence[str] | None = None,
) -> list[Series]:
    """Each unit of a C-MAPSS file as one asset, one reading per cycle.

    Data time is ``cycle * cycle_s``; ``sensors`` restricts the published columns
    (default: the 3 operational settings and the 21 sensors).
    """
    src = Path(path)
    if not src.is_file():
        raise DatasetError(f"C-MAPSS file not found: {src}")
    try:
        raw = np.loadtxt(src, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DatasetError(f"{src} is not a C-MAPSS text file: {exc}") from None
    if raw.shape[1] != len(CMAPSS_COLUMNS):
        raise DatasetError(
            f"{src} has {raw.shape[1]} columns; a C-MAPSS file has {len(CMAPSS_COLUMNS)}"
        )
    names = _pick_sensors(list(CMAPSS_COLUMNS[2:]), sensors, src)
    index = {name: i for i, name in enumerate(CMAPSS_COLUMNS)}
    out: list[Series] = []
    units = raw[:, 0].astype(np.int64)
    for unit in np.unique(units).tolist():
        rows = raw[units == unit]
        rows = rows[np.argsort(rows[:, 1], kind="stable")]
        cycles = rows[:, 1]
        last = float(cycles[-1])
        out.append(
            Series(
                asset=f"{asset_prefix}-{unit:03d}",
                ts=cycles * cycle_s,
                values={n: np.ascontiguousarray(rows[:, index[n]]) for n in names},
                truth={
                    "cycle": [int(c) for c in cycles.tolist()],
                    "rul_cycles": [last - c for c in cycles.tolist()],
                },
            )
        )
    return out


def _pick_sensors(available: list[str], wanted: Sequence[str] | None, src: Path) -> list[str]:
    if not wanted:
        return available
    missing = [w for w in wanted if w not in available]
    if missing:
        raise DatasetError(
            f"{src} has no column(s) {', '.join(missing)}; it has {', '.join(available)}"
        )
    return list(wanted)


def _to_epoch_s(column: pd.Series, name: str, src: Path) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype=np.float64)
        if np.nanmax(np.abs(values), initial=0.0) > _EPOCH_MS_THRESHOLD:
            values = values / 1000.0
        return values
    try:
        parsed = pd.to_datetime(column, utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{src}: time column {name!r} is not a time: {exc}") from None
    return np.asarray(
        (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
    )


def read_csv(
    path: str | Path,
    *,
    time_column: str,
    sep: str = ",",
    label_columns: Sequence[str] = (),
    asset_column: str | None = None,
    asset_from_file: bool = False,
    sensors: Sequence[str] | None = None,
) -> list[Series]:
    """Series from one CSV file or every ``*.csv`` in a directory.

    Assets: one per value of ``asset_column``, else one per file (its stem). Sensors:
    every numeric column except time, asset and labels (or ``sensors``). Rows with a
    missing sensor value are skipped, since a NaN reading would be rejected anyway.
    """
    src = Path(path)
    if asset_column and asset_from_file:
        raise DatasetError("choose either an asset column or --asset-from-file, not both")
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
        if not files:
            raise DatasetError(f"no .csv files in {src}")
    elif src.is_file():
        files = [src]
    else:
        raise DatasetError(f"CSV file or directory not found: {src}")
    out: list[Series] = []
    for file in files:
        try:
            frame = pd.read_csv(file, sep=sep)
        except (ValueError, pd.errors.ParserError) as exc:
            raise DatasetError(f"cannot read {file} as CSV (sep {sep!r}): {exc}") from None
        for needed in (time_column, *label_columns, *([asset_column] if asset_column else [])):
            if needed not in frame.columns:
                columns = ", ".join(map(str, frame.columns))
                hint = " (wrong --sep?)" if len(frame.columns) == 1 else ""
                raise DatasetError(f"{file} has no column {needed!r}; columns: {columns}{hint}")
        reserved = {time_column, *label_columns, *([asset_column] if asset_column else [])}
        numeric = [
            str(c)
            for c in frame.columns
            if c not in reserved and pd.api.types.is_numeric_dtype(frame[c])
        ]
        names = _pick_sensors(numeric, sensors, file)
        if not names:
            raise DatasetError(f"{file} has no numeric sensor columns")
        frame = frame.dropna(subset=[*names, time_column])
        frame = frame.assign(_ts=_to_epoch_s(frame[time_column], time_column, file))
        groups: list[tuple[str, pd.DataFrame]]
        if asset_column:
            groups = [(str(k), g) for k, g in frame.groupby(asset_column, sort=True)]
        else:
            groups = [(file.stem, frame)]
        for asset, group in groups:
            group = group.sort_values("_ts", kind="stable")
            out.append(
                Series(
                    asset=asset,
                    ts=group["_ts"].to_numpy(dtype=np.float64),
                    values={n: group[n].to_numpy(dtype=np.float64) for n in names},
                    truth={label: group[label].tolist() for label in label_columns},
                )
            )
    # Series of one asset spread over several files become one series.
    return _merge_same_asset(out)


def _merge_same_asset(series: list[Series]) -> list[Series]:
    merged: dict[str, Series] = {}
    for one in series:
        prev = merged.get(one.asset)
        if prev is None:
            merged[one.asset] = one
            continue
        if set(prev.values) != set(one.values):
            raise DatasetError(f"asset {one.asset!r} has different sensors in different files")
        ts = np.concatenate([prev.ts, one.ts])
        order = np.argsort(ts, kind="stable")
        merged[one.asset] = Series(
            asset=one.asset,
            ts=ts[order],
            values={k: np.concatenate([prev.values[k], one.values[k]])[order] for k in prev.values},
            truth={
                k: [(prev.truth[k] + one.truth[k])[i] for i in order.tolist()] for k in prev.truth
            },
        )
    return list(merged.values())


def _span_s(series: list[Series]) -> float:
    nonempty = [one for one in series if len(one)]
    if not nonempty:
        return 0.0
    return max(float(o.ts[-1]) for o in nonempty) - min(float(o.ts[0]) for o in nonempty)


def rebase(series: list[Series], start_ts: float) -> list[Series]:
    """Shift every series by the same offset so that the earliest sample is ``start_ts``."""
    firsts = [float(one.ts[0]) for one in series if len(one)]
    if not firsts:
        return series
    offset = start_ts - min(firsts)
    return [replace(one, ts=one.ts + offset) for one in series]


def stream_replay(
    series: list[Series],
    sink: MessageSink,
    *,
    topic_template: str = DEFAULT_TOPIC_TEMPLATE,
    site: str = DEFAULT_SITE,
    pacing: Pacing | None = None,
    batch: int = 1,
    start_ts: float | None = None,
    keep_time: bool = False,
    bad: BadInputInjector | None = None,
    count: int | None = None,
    truth: TruthTable | None = None,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> StreamStats:
    """Send the series, interleaved by time, to any sink."""
    pacing = pacing or Pacing(speedup=1.0)
    if not keep_time:
        if start_ts is None:
            start_ts = default_start_ts(_span_s(series), pacing)
        series = rebase(series, start_ts)
    chunks, total = interleave(series, batch)
    return run_stream(
        chunks,
        sink,
        topic_template=topic_template,
        site=site,
        pacing=pacing,
        bad=bad,
        count=count,
        total=total,
        truth=truth,
        on_progress=on_progress,
        stop=stop,
    )


def publish_replay(
    series: list[Series],
    *,
    host: str,
    port: int,
    qos: int = 1,
    topic_template: str = DEFAULT_TOPIC_TEMPLATE,
    site: str = DEFAULT_SITE,
    pacing: Pacing | None = None,
    batch: int = 1,
    start_ts: float | None = None,
    keep_time: bool = False,
    bad: BadInputInjector | None = None,
    count: int | None = None,
    truth_path: str | Path | None = None,
    bad_record_path: str | Path | None = None,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    username: str | None = None,
    password: str | None = None,
    backend: Backend = "auto",
    reconnect_timeout_s: float = DEFAULT_RECONNECT_TIMEOUT_S,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> RunReport:
    """Publish the series to ``host:port`` and wait for every acknowledgement."""
    target = BrokerTarget(
        host, port, qos, max_inflight, username, password, backend, reconnect_timeout_s
    )
    return publish_to_broker(
        target,
        lambda sink, truth: stream_replay(
            series,
            sink,
            topic_template=topic_template,
            site=site,
            pacing=pacing,
            batch=batch,
            start_ts=start_ts,
            keep_time=keep_time,
            bad=bad,
            count=count,
            truth=truth,
            on_progress=on_progress,
            stop=stop,
        ),
        truth_path=truth_path,
        bad_record_path=bad_record_path,
    )
