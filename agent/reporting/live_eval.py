"""How well did the running agent detect what was sent? Its records against ground truth.

The replay and fleet simulators write what they published (asset, ts, labels) to a
truth file; the agent recorded a verdict per window. Every labelled row after an
asset's baseline gets the verdict of the first window that ends at or after it (the
protocol of held-out recordings), and rows are pooled over assets:

- ``window``: the window alone was anomalous (score above threshold, machine
  running): ``predictions.is_anomaly``;
- ``alert``: an anomaly alert (incident) of the asset was open at the window's end.

Rows before an asset's first scored window (its learning and baseline) and after
its last one are not scored, and are counted as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine, select

from agent import schema as t
from agent.errors import DatasetError
from models.datasets import parse_labels
from models.metrics import DetectionCounts

VERDICTS = ("window", "alert")


@dataclass(frozen=True)
class AssetScore:
    asset: str
    rows: int
    unscored_rows: int
    counts: dict[str, DetectionCounts]
    #: Rows and seconds from the first labelled row to the first flag at or after it.
    delay_rows: dict[str, int | None]
    delay_s: dict[str, float | None]


@dataclass(frozen=True)
class LiveEvaluation:
    label: str
    assets: list[AssetScore]
    pooled: dict[str, DetectionCounts] = field(default_factory=dict)
    missing_assets: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def delays(verdict: str) -> dict[str, Any]:
            faulty = [a for a in self.assets if a.counts[verdict].tp + a.counts[verdict].fn]
            rows = [r for a in faulty if (r := a.delay_rows[verdict]) is not None]
            secs = [s for a in faulty if (s := a.delay_s[verdict]) is not None]
            return {
                "assets_with_anomalies": len(faulty),
                "assets_detected": len(rows),
                "median_delay_rows": float(np.median(rows)) if rows else None,
                "median_delay_s": float(np.median(secs)) if secs else None,
            }

        return {
            "protocol": "each labelled row after an asset's baseline gets the verdict of the "
            "first window ending at or after it; window = predictions.is_anomaly, alert = an "
            "anomaly alert open at that window's end",
            "label": self.label,
            "missing_assets": self.missing_assets,
            "pooled": {
                v: {**self.pooled[v].as_dict(), **delays(v)} for v in VERDICTS if v in self.pooled
            },
            "assets": [
                {
                    "asset": a.asset,
                    "rows": a.rows,
                    "unscored_rows": a.unscored_rows,
                    **{f"{v}_{k}": x for v in VERDICTS for k, x in a.counts[v].as_dict().items()},
                    **{f"{v}_delay_rows": a.delay_rows[v] for v in VERDICTS},
                    **{f"{v}_delay_s": a.delay_s[v] for v in VERDICTS},
                }
                for a in self.assets
            ],
        }


def read_truth(path: Path, label: str) -> dict[str, tuple[npt.NDArray[np.int64], Any]]:
    """Per asset: reading times (ms, ascending) and the label as booleans."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read truth file {path}: {exc}") from None
    missing = [c for c in ("asset", "ts", label) if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"truth file {path} lacks column(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, frame.columns))})"
        )
    # The same reading of labels as `evaluate anomaly`: numbers, booleans or words
    # (a fleet run's fault column says "none" or the fault's name).
    flags, _ = parse_labels(frame[label])
    frame = frame.assign(_flag=flags, _ms=(frame["ts"] * 1000).round())
    out: dict[str, tuple[npt.NDArray[np.int64], Any]] = {}
    for asset, rows in frame.sort_values("_ms").groupby("asset", sort=True):
        out[str(asset)] = (rows["_ms"].to_numpy(np.int64), rows["_flag"].to_numpy(bool))
    return out


def evaluate_live(
    engine: Engine,
    truth: Path,
    label: str,
    progress: Callable[[int, int], None] | None = None,
) -> LiveEvaluation:
    """Score the agent's records in ``engine`` against the truth file (see module docs)."""
    table = read_truth(truth, label)
    scores: list[AssetScore] = []
    missing: list[str] = []
    with engine.connect() as conn:
        ids = dict(conn.execute(select(t.assets.c.name, t.assets.c.id)).all())
        for k, (asset, (ts_ms, labels)) in enumerate(table.items()):
            if progress is not None:
                progress(k, len(table))
            aid = ids.get(asset)
            if aid is None:
                missing.append(asset)
                continue
            p = t.predictions.c
            rows = conn.execute(
                select(p.window_end_ms, p.is_anomaly)
                .where(p.asset_id == aid)
                .order_by(p.window_end_ms)
            ).all()
            a = t.alerts.c
            spans = conn.execute(
                select(a.opened_ms, a.closed_ms).where(a.asset_id == aid, a.kind == "anomaly")
            ).all()
            scores.append(_score_asset(asset, ts_ms, labels, rows, spans))
    pooled = {v: sum((s.counts[v] for s in scores), DetectionCounts(0, 0, 0, 0)) for v in VERDICTS}
    return LiveEvaluation(label, scores, pooled, missing)


def _score_asset(
    asset: str,
    ts_ms: npt.NDArray[np.int64],
    labels: npt.NDArray[np.bool_],
    predictions: Any,
    alerts: Any,
) -> AssetScore:
    ends = np.array([r[0] for r in predictions], dtype=np.int64)
    window_flag = np.array([bool(r[1]) for r in predictions], dtype=bool)
    alert_flag = np.zeros(len(ends), dtype=bool)
    for opened, closed in alerts:
        stop = np.iinfo(np.int64).max if closed is None else closed
        alert_flag |= (ends >= opened) & (ends < stop)
    scored = np.zeros(len(ts_ms), dtype=bool)
    which = np.zeros(len(ts_ms), dtype=np.int64)
    if len(ends):
        which = np.searchsorted(ends, ts_ms, side="left")
        # Baseline rows (before the first window's end) and rows after the last
        # window have no verdict.
        scored = (ts_ms >= ends[0]) & (which < len(ends))
    counts: dict[str, DetectionCounts] = {}
    delay_rows: dict[str, int | None] = {}
    delay_s: dict[str, float | None] = {}
    for verdict, flags in (("window", window_flag), ("alert", alert_flag)):
        flagged = np.zeros(len(ts_ms), dtype=bool)
        flagged[scored] = flags[which[scored]]
        counts[verdict] = DetectionCounts.from_flags(flagged[scored], labels[scored])
        onset = np.flatnonzero(labels & scored)
        delay_rows[verdict] = delay_s[verdict] = None
        if onset.size:
            hits = np.flatnonzero(flagged[onset[0] :])
            if hits.size:
                delay_rows[verdict] = int(hits[0])
                delay_s[verdict] = float(ts_ms[onset[0] + hits[0]] - ts_ms[onset[0]]) / 1000
    return AssetScore(asset, len(ts_ms), int((~scored).sum()), counts, delay_rows, delay_s)
