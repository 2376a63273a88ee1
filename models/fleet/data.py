"""From synced retraining files to per-asset tables with row classes, split by asset.

Every retraining file (docs/sync.md) holds one asset's readings of one hour. Both engines
turn a file into the same normalised Arrow table (:func:`normalise`): ``site``, ``agent``
(from the object key), ``asset``, ``ts_ms``, the profile's sensors (null where absent),
``alert_id``, ``reason`` and ``label``; the rows of all files are then sorted by
(site, agent, asset, ts_ms) and a repeated reading (same asset and time) is kept once, so
the result does not depend on the order files were read in.

Row classes (what a row may be used for):

- ``NORMAL``: the asset's commissioning baseline, a sampled normal window, or readings
  around an alert that an operator labelled ``false_alarm`` or ``maintenance``: healthy
  training data and negatives of the evaluation;
- ``FAULT``: readings inside an alert (opened to closed) labelled ``fault``: never
  trained on, the positives of the evaluation;
- ``UNKNOWN``: readings around an alert nobody labelled, the context of a fault alert
  outside its open interval, and the sampled windows of an asset that had a fault (a
  fault develops for hours or days before its alert and outlasts it; of such an asset
  only its commissioning baseline and what operators called normal are healthy):
  neither trained on nor scored.

The split is by asset, never by window: a BLAKE2b hash of (seed, site, agent, asset)
decides, so adding gateways leaves every other asset's side unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from agent.errors import DatasetError
from models.fleet.catalog import FAULT, NORMAL_VERDICTS, VERDICTS, Entry, Label

if TYPE_CHECKING:
    import pyarrow as pa

NORMAL: Final = 0
FAULT_ROW: Final = 1
UNKNOWN: Final = 2
CLASS_NAMES: Final = {NORMAL: "normal", FAULT_ROW: "fault", UNKNOWN: "unknown"}
META_COLUMNS: Final = ("site", "agent", "asset", "ts_ms", "alert_id", "reason", "label")
#: A gap longer than this many sample periods ends a contiguous segment: no window
#: spans it (retraining files keep stretches of readings, not the whole stream).
MAX_GAP_PERIODS: Final = 2.5

AssetKey = tuple[str, str, str]


def schema(sensors: Sequence[str]) -> pa.Schema:
    import pyarrow as pa

    fields = [
        pa.field("site", pa.string()),
        pa.field("agent", pa.string()),
        pa.field("asset", pa.string()),
        pa.field("ts_ms", pa.int64()),
        *[pa.field(s, pa.float64()) for s in sensors],
        pa.field("alert_id", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("label", pa.string()),
    ]
    return pa.schema(fields)


def normalise(
    table: pa.Table, site: str | pa.Array, agent: str | pa.Array, sensors: Sequence[str]
) -> pa.Table:
    """Retraining rows in the fleet layout (see the module docs); ``site`` and ``agent``
    are one file's, or one value per row when a batch mixes files."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    names = set(table.column_names)

    def column(name: str, kind: pa.DataType) -> pa.Array:
        if name in names:
            return pc.cast(table.column(name), kind).combine_chunks()
        return pa.nulls(n, kind)

    ts = table.column("ts").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).combine_chunks()
    arrays = [
        pa.array([site] * n, pa.string()) if isinstance(site, str) else site,
        pa.array([agent] * n, pa.string()) if isinstance(agent, str) else agent,
        column("asset", pa.string()),
        ts,
        *[column(s, pa.float64()) for s in sensors],
        column("alert_id", pa.int64()),
        column("reason", pa.string()),
        column("label", pa.string()),
    ]
    return pa.Table.from_arrays(arrays, schema=schema(sensors))


def canonical(tables: Sequence[pa.Table], sensors: Sequence[str]) -> pa.Table:
    """All rows sorted by (site, agent, asset, ts_ms), a repeated reading kept once."""
    import pyarrow as pa

    if not tables:
        return schema(sensors).empty_table()
    rows = pa.concat_tables([t.cast(schema(sensors)) for t in tables]).combine_chunks()
    order = rows.sort_by([(c, "ascending") for c in ("site", "agent", "asset", "ts_ms")])
    if order.num_rows < 2:
        return order
    keys = [order.column(c).to_numpy(zero_copy_only=False) for c in ("site", "agent", "asset")]
    ts = order.column("ts_ms").to_numpy()
    same = (ts[1:] == ts[:-1]) & np.logical_and.reduce([k[1:] == k[:-1] for k in keys])
    if not same.any():
        return order
    keep = np.concatenate([[True], ~same])
    return order.filter(pa.array(keep))


@dataclass
class AssetRows:
    """One asset's readings in time order, with what each row may be used for."""

    key: AssetKey
    ts_ms: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    row_class: npt.NDArray[np.int8]
    alert_id: npt.NDArray[np.int64]
    #: Rows around alerts labelled false_alarm or maintenance (now NORMAL).
    relabelled_normal: npt.NDArray[np.bool_]

    @property
    def name(self) -> str:
        return "/".join(self.key)

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def segments(self, period_ms: float) -> list[tuple[int, int]]:
        """Row ranges ``[start, end)`` with no gap over :data:`MAX_GAP_PERIODS` periods."""
        if len(self) == 0:
            return []
        cuts = np.flatnonzero(np.diff(self.ts_ms) > MAX_GAP_PERIODS * period_ms) + 1
        edges = [0, *cuts.tolist(), len(self)]
        return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]

    def runs(self, mask: npt.NDArray[np.bool_], period_ms: float) -> list[tuple[int, int]]:
        """Contiguous row ranges where ``mask`` holds (within segments)."""
        out: list[tuple[int, int]] = []
        for a, b in self.segments(period_ms):
            m = mask[a:b].astype(np.int8)
            edges = np.flatnonzero(np.diff(np.concatenate([[0], m, [0]])))
            out.extend(
                (a + int(s), a + int(e)) for s, e in zip(edges[::2], edges[1::2], strict=True)
            )
        return out


def _verdict(
    key: AssetKey, alert: int, labels: Mapping[tuple[str, str, str, int], Label], stored: str | None
) -> Label | str | None:
    lab = labels.get((*key, alert))
    if lab is not None:
        return lab
    return stored if stored in VERDICTS else None


def classify(
    table: pa.Table, sensors: Sequence[str], labels: Mapping[tuple[str, str, str, int], Label]
) -> list[AssetRows]:
    """Split a canonical table into :class:`AssetRows` and give every row its class."""
    if table.num_rows == 0:
        return []
    site = table.column("site").to_numpy(zero_copy_only=False)
    agent = table.column("agent").to_numpy(zero_copy_only=False)
    asset = table.column("asset").to_numpy(zero_copy_only=False)
    ts = table.column("ts_ms").to_numpy().astype(np.int64)
    values = np.column_stack(
        [table.column(s).to_numpy(zero_copy_only=False).astype(np.float64) for s in sensors]
    )
    alert = table.column("alert_id").fill_null(-1).to_numpy().astype(np.int64)
    reason = table.column("reason").to_numpy(zero_copy_only=False)
    stored = table.column("label").to_numpy(zero_copy_only=False)
    change = np.flatnonzero(
        (site[1:] != site[:-1]) | (agent[1:] != agent[:-1]) | (asset[1:] != asset[:-1])
    )
    edges = [0, *(change + 1).tolist(), len(ts)]
    out: list[AssetRows] = []
    for a, b in itertools.pairwise(edges):
        key: AssetKey = (str(site[a]), str(agent[a]), str(asset[a]))
        cls = np.full(b - a, UNKNOWN, dtype=np.int8)
        relabelled = np.zeros(b - a, dtype=bool)
        al = alert[a:b]
        t = ts[a:b]
        plain = al < 0
        # Baseline and sampled rows are healthy by the gateway's assumption; any other
        # row outside an alert's context is of a reason this reader does not know.
        cls[plain & np.isin(reason[a:b], ["baseline", "sample"])] = NORMAL
        had_fault = False
        for alert_id in np.unique(al[~plain]):
            rows = al == alert_id
            first_stored = stored[a:b][rows][0] if rows.any() else None
            verdict = _verdict(key, int(alert_id), labels, first_stored)
            name = verdict.label if isinstance(verdict, Label) else verdict
            if name in NORMAL_VERDICTS:
                cls[rows] = NORMAL
                relabelled[rows] = True
            elif name == FAULT:
                inside = rows.copy()
                if isinstance(verdict, Label) and verdict.opened_ms is not None:
                    never = int(np.iinfo(np.int64).max)
                    end = verdict.closed_ms if verdict.closed_ms is not None else never
                    inside &= (t >= verdict.opened_ms) & (t <= end)
                cls[inside] = FAULT_ROW
                had_fault = True
        if had_fault:
            # A fault develops for hours or days before its alert opens and does not end
            # when the alert closes: of an asset that had one, only the commissioning
            # baseline and what operators called normal count as healthy.
            cls[(cls == NORMAL) & ~relabelled & (reason[a:b] != "baseline")] = UNKNOWN
        out.append(AssetRows(key, t, values[a:b], cls, al, relabelled))
    return out


def usable(rows: AssetRows) -> bool:
    """Whether every sensor of the profile has at least one value in the asset's rows."""
    return bool(len(rows)) and bool(np.isfinite(rows.values).any(axis=0).all())


def _draw(key: AssetKey, seed: int) -> float:
    digest = hashlib.blake2b("/".join((str(seed), *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def is_validation(key: AssetKey, seed: int, fraction: float) -> bool:
    return _draw(key, seed) < fraction


def split_assets(
    assets: Sequence[AssetRows], seed: int, fraction: float
) -> tuple[list[AssetRows], list[AssetRows]]:
    """Training and validation assets (whole assets, never windows); each side gets at
    least one asset when there are two or more."""
    if len(assets) < 2:
        raise DatasetError(
            f"{len(assets)} usable asset(s): training and validation need two or more",
            hint="sync more gateways' data, or check --profile against the assets' sensors",
        )
    val = [a for a in assets if is_validation(a.key, seed, fraction)]
    train = [a for a in assets if not is_validation(a.key, seed, fraction)]
    ranked = sorted(
        assets,
        key=lambda a: hashlib.blake2b(
            "/".join((str(seed), *a.key)).encode(), digest_size=8
        ).digest(),
    )
    if not val:
        val = [ranked[0]]
        train = [a for a in assets if a is not ranked[0]]
    elif not train:
        train = [ranked[-1]]
        val = [a for a in assets if a is not ranked[-1]]
    return train, val


def describe(assets: Sequence[AssetRows], entries: Sequence[Entry]) -> dict[str, Any]:
    """What a manifest records of the data: gateways, assets, rows, time range, classes."""
    rows = sum(len(a) for a in assets)
    counts = {name: 0 for name in CLASS_NAMES.values()}
    for a in assets:
        for code, name in CLASS_NAMES.items():
            counts[name] += int((a.row_class == code).sum())
    first = min((int(a.ts_ms[0]) for a in assets if len(a)), default=None)
    last = max((int(a.ts_ms[-1]) for a in assets if len(a)), default=None)
    return {
        "gateways": sorted({f"{a.key[0]}/{a.key[1]}" for a in assets}),
        "assets": len(assets),
        "rows": rows,
        "rows_by_class": counts,
        "rows_relabelled_normal": int(sum(int(a.relabelled_normal.sum()) for a in assets)),
        "first_ts_ms": first,
        "last_ts_ms": last,
        "files": len(entries),
        "bytes": int(sum(e.size for e in entries)),
    }
