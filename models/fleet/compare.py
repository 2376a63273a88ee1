"""``edgewatch fleet evaluate``: a candidate against the incumbent on held-out assets.

Each validation asset (the candidate manifest's, never trained on) is replayed through
each bundle the way a gateway runs it (:mod:`models.commission`, :mod:`models.scoring`):
its first healthy stretch (at most ``baseline_rows`` readings) commissions the asset,
then every later reading whose window has no gap gets the window's score and the alarm
state of the hysteresis (restarted after a gap in the data). Readings are scored against
the operators' labels (:mod:`models.fleet.data` row classes): fault rows are positives,
normal rows (baseline, sampled, false alarm, maintenance) negatives, unlabelled alert
context is not scored.

``false alarms`` are alarms that start on a normal row; ``labelled false alarms`` those
that start on rows operators labelled false_alarm or maintenance, and
``false_alarms_removed`` is the incumbent's count of these minus the candidate's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import DatasetError
from models.bundle import Bundle
from models.commission import commission, fill_missing
from models.fleet import data as fleet_data
from models.fleet.catalog import load_catalog
from models.fleet.data import FAULT_ROW, NORMAL, UNKNOWN, AssetRows
from models.fleet.read import read_local
from models.fleet.store import Store
from models.metrics import DetectionCounts
from models.preprocessing import windows_ending_at
from models.scoring import alarm_flags

#: Commissioning readings per asset (the agent's default model.commission_samples).
DEFAULT_BASELINE_ROWS = 1440
#: Commissioning needs this many windows of baseline (models.commission).
MIN_BASELINE_WINDOWS = 3
DEFAULT_F1_TOLERANCE = 0.01

AssetProgress = Callable[[int, int, str], None]


@dataclass
class AssetResult:
    asset: str
    counts: DetectionCounts
    scored_rows: int
    unscored_rows: int
    #: Rows from the first fault row to the first alarm at or after it (None: no fault
    #: or never detected).
    detection_delay_rows: int | None
    #: Alarms that started on a normal row (baseline, sampled, labelled normal).
    false_alarms: int
    #: Of those, alarms that started on rows operators labelled false_alarm / maintenance.
    labelled_false_alarms: int
    threshold: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "asset": self.asset,
            "scored_rows": self.scored_rows,
            "unscored_rows": self.unscored_rows,
            "detection_delay_rows": self.detection_delay_rows,
            "false_alarms": self.false_alarms,
            "labelled_false_alarms": self.labelled_false_alarms,
            "threshold": self.threshold,
            **self.counts.as_dict(),
        }


@dataclass
class BundleResult:
    version: str
    assets: list[AssetResult]

    @property
    def pooled(self) -> DetectionCounts:
        total = DetectionCounts(0, 0, 0, 0)
        for a in self.assets:
            total = total + a.counts
        return total

    @property
    def false_alarms(self) -> int:
        return sum(a.false_alarms for a in self.assets)

    @property
    def labelled_false_alarms(self) -> int:
        return sum(a.labelled_false_alarms for a in self.assets)

    @property
    def median_delay_rows(self) -> float | None:
        delays = [a.detection_delay_rows for a in self.assets if a.detection_delay_rows is not None]
        return float(np.median(delays)) if delays else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "pooled": {
                **self.pooled.as_dict(),
                "false_alarms": self.false_alarms,
                "labelled_false_alarms": self.labelled_false_alarms,
                "median_detection_delay_rows": self.median_delay_rows,
                "assets_with_faults": sum(1 for a in self.assets if a.counts.tp + a.counts.fn),
                "assets_detected": sum(
                    1 for a in self.assets if a.detection_delay_rows is not None
                ),
            },
            "assets": [a.as_dict() for a in self.assets],
        }


@dataclass
class Comparison:
    candidate: BundleResult
    incumbent: BundleResult
    labelled_false_alarm_rows: int
    fault_rows: int
    skipped_assets: list[str] = field(default_factory=list)
    #: How much lower the candidate's F1 may be and still count as no worse: a few rows
    #: of a fault detected a reading later move the row F1 of a handful of assets by
    #: about 0.001; a real loss of recall moves it by far more.
    f1_tolerance: float = DEFAULT_F1_TOLERANCE

    @property
    def false_alarms_removed(self) -> int:
        """Alarms on operator-labelled false alarms the incumbent raises and the candidate
        does not (negative: the candidate raises more)."""
        return self.incumbent.labelled_false_alarms - self.candidate.labelled_false_alarms

    def no_worse(self) -> bool:
        """F1 at least the incumbent's less ``f1_tolerance`` (when there are faults), FAR
        at most its, and no more false alarms (all of them, labelled or not)."""
        c, i = self.candidate.pooled, self.incumbent.pooled
        f1_ok = not self.fault_rows or _ge(c.f1, i.f1 - self.f1_tolerance)
        fewer = self.candidate.false_alarms <= self.incumbent.false_alarms
        return f1_ok and _ge(-c.far, -i.far) and fewer

    def better(self) -> bool:
        """No worse, and strictly better in F1, FAR or false alarms."""
        c, i = self.candidate.pooled, self.incumbent.pooled
        gained = (
            (self.fault_rows and c.f1 > i.f1)
            or c.far < i.far
            or self.candidate.false_alarms < self.incumbent.false_alarms
            or self.false_alarms_removed > 0
        )
        return self.no_worse() and bool(gained)

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": "each validation asset commissions on its first healthy stretch, then "
            "every later gap-free window is scored with the hysteresis; fault-labelled rows "
            "are positives, baseline/sampled/false_alarm/maintenance rows negatives",
            "fault_rows": self.fault_rows,
            "labelled_false_alarm_rows": self.labelled_false_alarm_rows,
            "false_alarms_removed": self.false_alarms_removed,
            "f1_tolerance": self.f1_tolerance,
            "no_worse": self.no_worse(),
            "better": self.better(),
            "skipped_assets": self.skipped_assets,
            "candidate": self.candidate.as_dict(),
            "incumbent": self.incumbent.as_dict(),
        }


def _ge(a: float, b: float) -> bool:
    if math.isnan(b):
        return True
    return not math.isnan(a) and a >= b - 1e-12


def baseline_range(rows: AssetRows, period_ms: float, limit: int, window: int) -> tuple[int, int]:
    """The first healthy stretch long enough to commission on (capped at ``limit``)."""
    need = MIN_BASELINE_WINDOWS * window
    for a, b in rows.runs(rows.row_class == NORMAL, period_ms):
        if b - a >= need:
            return a, min(b, a + limit)
    raise DatasetError(f"{rows.name}: no healthy stretch of {need} readings to commission on")


def score_asset(
    bundle: Bundle,
    rows: AssetRows,
    *,
    period_ms: float,
    baseline_rows: int,
    seed: int,
    epochs: int,
) -> AssetResult:
    """One asset through one bundle, as a gateway would run it (see the module docs)."""
    a, b = baseline_range(rows, period_ms, baseline_rows, bundle.window)
    baseline = commission(
        fill_missing(rows.values[a:b]),
        bundle,
        sensors=bundle.sensors,
        asset=rows.name,
        seed=seed,
        epochs=epochs,
    )
    values = rows.values.astype(np.float32)
    flags = np.zeros(len(rows), dtype=bool)
    scored = np.zeros(len(rows), dtype=bool)
    for s, e in rows.segments(period_ms):
        # Baseline rows commissioned the asset; a window needs its whole length of data.
        start = max(s + bundle.window - 1, b)
        if start >= e:
            continue
        filled = fill_missing(values[s:e]) if np.isfinite(values[s:e]).any(axis=0).all() else None
        if filled is None:
            continue
        ends = np.arange(start - s, e - s)
        windows = windows_ending_at(filled, ends, bundle.window)
        scores = baseline.score(windows)
        judged = baseline.judged(windows)
        flags[s + ends] = alarm_flags(scores, baseline.threshold, baseline.rule, judged)
        scored[s + ends] = True
    known = scored & (rows.row_class != UNKNOWN)
    truth = rows.row_class == FAULT_ROW
    counts = DetectionCounts.from_flags(flags[known], truth[known])
    delay: int | None = None
    onset = np.flatnonzero(truth & known)
    if onset.size:
        hits = np.flatnonzero(flags[onset[0] :])
        delay = int(hits[0]) if hits.size else None
    starts = onsets(flags)
    return AssetResult(
        rows.name,
        counts,
        int(known.sum()),
        int((~known).sum()),
        delay,
        int((rows.row_class[starts] == NORMAL).sum()),
        int(rows.relabelled_normal[starts].sum()),
        baseline.threshold,
    )


def validation_assets(bundle: Bundle) -> list[str]:
    data = (bundle.manifest.get("training") or {}).get("data") or {}
    names = data.get("validation_assets")
    if not names:
        raise DatasetError(
            f"bundle {bundle.version} names no validation assets",
            hint="evaluate a candidate written by `edgewatch fleet retrain`",
        )
    return [str(n) for n in names]


def compare(
    candidate: Bundle,
    incumbent: Bundle,
    data_url: str,
    *,
    assets: Sequence[str] | None = None,
    baseline_rows: int = DEFAULT_BASELINE_ROWS,
    seed: int = 0,
    epochs: int = 60,
    f1_tolerance: float = DEFAULT_F1_TOLERANCE,
    progress: AssetProgress | None = None,
) -> Comparison:
    if list(candidate.sensors) != list(incumbent.sensors) or candidate.window != incumbent.window:
        raise DatasetError(
            f"{candidate.version} and {incumbent.version} do not take the same windows "
            "(sensors or window length differ)",
            hint="compare bundles of one profile",
        )
    wanted = set(assets if assets is not None else validation_assets(candidate))
    period_s = candidate.manifest.get("sample_period_s") or 60.0
    period_ms = float(period_s) * 1000.0
    store = Store(data_url)
    catalog = load_catalog(store)
    sensors = list(candidate.sensors)
    table = read_local(store, catalog.retraining, sensors).table
    found = [a for a in fleet_data.classify(table, sensors, catalog.labels) if a.name in wanted]
    missing = sorted(wanted - {a.name for a in found})
    results: dict[str, list[AssetResult]] = {"candidate": [], "incumbent": []}
    skipped = list(missing)
    for k, rows in enumerate(found):
        try:
            for role, bundle in (("candidate", candidate), ("incumbent", incumbent)):
                results[role].append(
                    score_asset(
                        bundle,
                        rows,
                        period_ms=period_ms,
                        baseline_rows=baseline_rows,
                        seed=seed,
                        epochs=epochs,
                    )
                )
        except DatasetError:
            skipped.append(rows.name)
            results["candidate"] = [r for r in results["candidate"] if r.asset != rows.name]
        if progress is not None:
            progress(k + 1, len(found), rows.name)
    if not results["candidate"]:
        raise DatasetError(
            f"none of the {len(wanted)} validation asset(s) can be replayed from {data_url}",
            hint="check --data: it must hold the data the candidate was trained from",
        )
    scored = [a for a in found if a.name not in skipped]
    return Comparison(
        BundleResult(candidate.version, results["candidate"]),
        BundleResult(incumbent.version, results["incumbent"]),
        int(sum(int(a.relabelled_normal.sum()) for a in scored)),
        int(sum(int((a.row_class == FAULT_ROW).sum()) for a in scored)),
        skipped,
        f1_tolerance,
    )


def onsets(flags: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
    """Indices where an alarm starts."""
    return np.flatnonzero(flags & ~np.concatenate([[False], flags[:-1]]))
