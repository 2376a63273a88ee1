"""matplotlib figures for one asset and for the fleet (Agg, no pyplot, no display).

matplotlib is imported inside the functions: the CLI starts without it.

Asset and sensor names are whatever publishers sent: every such string goes through
:func:`plain` and figures are built and drawn under :func:`plain_text`, so a name is
drawn as written and never parsed as mathtext or LaTeX.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.logs import printable
from agent.reporting.data import AssetData, FleetData, Series

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Colours by state and severity, readable for the common colour-vision deficiencies.
STATE_COLOURS = {
    "alerting": "#d62728",
    "healthy": "#2ca02c",
    "commissioning": "#9e9e9e",
    "retired": "#bdbdbd",
}
SEVERITY_COLOURS = {"critical": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4"}
#: An asset that has not reported for this long is marked silent in the fleet figure.
SILENT_MS = 3_600_000
#: Sensor name suffix -> unit shown on the axis.
UNITS = {
    "_c": "°C",
    "_a": "A",
    "_bar": "bar",
    "_mm_s": "mm/s",
    "_m3_h": "m³/h",
    "_rpm": "rpm",
    "_kw": "kW",
    "_v": "V",
    "_hz": "Hz",
    "_pct": "%",
}


def plain(text: str) -> str:
    """``text`` as matplotlib should draw it: one line, no mathtext.

    Control characters become visible escapes; every ``$`` is escaped, which
    matplotlib draws as a dollar sign and which can therefore never open a formula
    (an unknown command such as ``$\\x$`` used to fail the whole figure).
    """
    return printable(text).replace("$", r"\$")


@contextmanager
def plain_text() -> Iterator[None]:
    """Build or draw a figure with LaTeX off, whatever a matplotlibrc says.

    Text artists read ``text.usetex`` when they are made, and tick labels are made
    while drawing, so both the building and the drawing happen in here.
    """
    import matplotlib

    with matplotlib.rc_context({"text.usetex": False}):
        yield


def local(ms: int) -> datetime:
    """Naive local time: matplotlib's date axis then shows what the plant's clock says."""
    return datetime.fromtimestamp(ms / 1000).astimezone().replace(tzinfo=None)


def sensor_label(name: str) -> str:
    for suffix, unit in sorted(UNITS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return f"{plain(name[: -len(suffix)].replace('_', ' '))}\n({unit})"
    return plain(name.replace("_", " "))


def _times(series: Series) -> list[datetime]:
    return [local(ms) for ms in series.ts_ms]


def _values(series: Series) -> list[float]:
    return [math.nan if v is None else float(v) for v in series.values]


def asset_figure(data: AssetData) -> Figure:
    """Sensors, anomaly score vs threshold and RUL on one time axis, alerts shaded."""
    with plain_text():
        return _asset_figure(data)


def _asset_figure(data: AssetData) -> Figure:
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    sensors = list(data.sensors)
    ratios = [1.0] * len(sensors) + [1.8, 1.5]
    fig = Figure(figsize=(12, 1.25 * len(sensors) + 5.0), layout="constrained")
    axes = fig.subplots(len(ratios), 1, sharex=True, gridspec_kw={"height_ratios": ratios})
    since, until = local(data.since_ms), local(data.until_ms)
    zone = datetime.now().astimezone().tzname() or "local time"
    version = f", model {data.model_version}" if data.model_version else ""
    fig.suptitle(
        plain(
            f"{data.asset}: {data.state.upper()}{', STOPPED' if data.stopped else ''}   "
            f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} ({zone}){version}"
        ),
        fontsize=13,
        fontweight="bold",
        color=STATE_COLOURS.get(data.state, "black"),
    )
    for ax, name in zip(axes, sensors, strict=False):
        series = data.sensors[name]
        ax.plot(_times(series), _values(series), lw=0.9, color="#1f77b4")
        ax.set_ylabel(sensor_label(name), rotation=0, ha="right", va="center", fontsize=9)
        ax.grid(alpha=0.3)

    score_ax, rul_ax = axes[-2], axes[-1]
    _score_panel(score_ax, data)
    _rul_panel(rul_ax, data)
    for ax in axes:
        for span in data.alerts:
            end = span.closed_ms if span.closed_ms is not None else data.until_ms
            ax.axvspan(
                local(max(span.opened_ms, data.since_ms)),
                local(min(end, data.until_ms)),
                color=SEVERITY_COLOURS.get(span.severity, "#ff7f0e"),
                alpha=0.15,
                lw=0,
            )
        ax.set_xlim(since, until)
    locator = rul_ax.xaxis.get_major_locator()
    rul_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    if data.alerts:
        handles = [
            Patch(color=SEVERITY_COLOURS[s], alpha=0.3, label=f"{s} alert")
            for s in ("warning", "critical")
            if any(a.severity == s for a in data.alerts)
        ]
        axes[0].legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.8)
    return fig


def _score_panel(ax: Any, data: AssetData) -> None:
    times = _times(data.score)
    scores = _values(data.score)
    ax.plot(times, scores, lw=1.0, color="black", label="anomaly score (max per point)")
    ax.step(
        _times(data.threshold),
        _values(data.threshold),
        where="post",
        color="#d62728",
        ls="--",
        lw=1.2,
        label="threshold",
    )
    finite = [s for s in scores if math.isfinite(s) and s > 0]
    if finite and max(finite) / max(min(finite), 1e-9) > 30:
        ax.set_yscale("log")  # a failing machine scores 1000x a healthy one
    ax.set_ylabel("anomaly\nscore", rotation=0, ha="right", va="center", fontsize=9)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
    ax.grid(alpha=0.3)
    if not data.score.ts_ms:
        ax.text(0.5, 0.5, "no predictions in this range", transform=ax.transAxes, ha="center")


def _rul_panel(ax: Any, data: AssetData) -> None:
    unit = plain(f" ({data.rul_unit})") if data.rul_unit else ""
    ax.plot(_times(data.rul), _values(data.rul), lw=1.2, color="#9467bd", label="RUL estimate")
    if any(v is not None for v in data.rul_low.values):
        ax.fill_between(
            _times(data.rul_low),
            _values(data.rul_low),
            _values(data.rul_high),
            color="#9467bd",
            alpha=0.2,
            lw=0,
            label="80 % interval",
        )
        ax.legend(loc="lower left", fontsize=8, framealpha=0.8)
    ax.axhline(0, color="black", lw=0.8)
    if data.rul_alert_below is not None:
        ax.axhline(data.rul_alert_below, color="#d62728", ls="--", lw=1.0, label="RUL alert limit")
    ax.set_ylabel(f"remaining\nuseful life{unit}", rotation=0, ha="right", va="center", fontsize=9)
    ax.grid(alpha=0.3)
    pairs = zip(data.rul.ts_ms, data.rul.values, strict=True)
    latest = next(((ts, v) for ts, v in reversed(list(pairs)) if v is not None), None)
    if data.stopped and latest is not None:
        ax.annotate(
            plain(f"stopped: RUL held at {latest[1]:.0f} {data.rul_unit}".rstrip()),
            xy=(0.01, 0.9),
            xycoords="axes fraction",
            ha="left",
            va="top",
            fontsize=9,
            color="#555555",
            bbox={"boxstyle": "round", "fc": "white", "ec": "#999999", "alpha": 0.9},
        )
    hours = {"h": 1.0, "hours": 1.0, "d": 24.0, "days": 24.0, "min": 1 / 60}.get(data.rul_unit)
    if latest is not None and hours is not None:
        # The failure horizon: where the newest estimate says the machine will fail.
        horizon = latest[0] + int(latest[1] * hours * 3_600_000)
        text = plain(
            f"failure horizon {local(horizon):%Y-%m-%d %H:%M} (in {latest[1]:.0f} {data.rul_unit})"
        )
        ax.annotate(
            text,
            xy=(0.99, 0.9),
            xycoords="axes fraction",
            ha="right",
            va="top",
            fontsize=9,
            color="#9467bd",
            bbox={"boxstyle": "round", "fc": "white", "ec": "#9467bd", "alpha": 0.9},
        )
    ax.legend(loc="upper left", fontsize=8, framealpha=0.8)


def fleet_figure(fleet: FleetData) -> Figure:
    """One row per asset, worst first: latest score/threshold, RUL, open alerts."""
    with plain_text():
        return _fleet_figure(fleet)


def _fleet_figure(fleet: FleetData) -> Figure:
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = fleet.rows
    n = max(len(rows), 1)
    fig = Figure(figsize=(13, 0.42 * n + 2.4), layout="constrained")
    score_ax, rul_ax = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [2.2, 1]})
    y = list(range(len(rows)))[::-1]  # worst on top
    colours = [STATE_COLOURS.get(r.state, "#bdbdbd") for r in rows]
    ratios = [r.ratio if r.ratio is not None else math.nan for r in rows]
    score_ax.barh(y, [v if math.isfinite(v) else 0 for v in ratios], color=colours, height=0.7)
    score_ax.set_xscale("log")
    finite = [v for v in ratios if math.isfinite(v) and v > 0]
    low = min([0.1, *finite]) / 1.5
    high = max([10.0, *finite]) * 40  # room for the labels right of the longest bar
    score_ax.set_xlim(low, high)
    score_ax.axvline(1.0, color="black", ls="--", lw=1.2)
    score_ax.text(1.05, 1.0, "threshold", transform=score_ax.get_xaxis_transform(), va="bottom")
    score_ax.set_xlabel("latest anomaly score / asset's threshold (log scale; above 1 = anomalous)")
    score_ax.set_yticks(y, [plain(r.asset) for r in rows])
    for yi, row, ratio in zip(y, rows, ratios, strict=True):
        if row.state == "commissioning" or not math.isfinite(ratio):
            label, at = "learning its baseline", low * 1.1
        else:
            label, at = f"{ratio:.1f}x", ratio * 1.08
        if row.open_alerts:
            label += f"   {row.open_alerts} open alert{'s' if row.open_alerts > 1 else ''}"
        if row.last_seen_ms is not None and fleet.generated_ms - row.last_seen_ms > SILENT_MS:
            # A machine that stopped reporting is news even when its last score was fine.
            label += f"\nsilent since {local(row.last_seen_ms):%m-%d %H:%M}"
        score_ax.text(at, yi, label, va="center", fontsize=8.5, linespacing=1.1)
    score_ax.grid(axis="x", alpha=0.3)

    unit = plain(f" ({fleet.rul_unit})") if fleet.rul_unit else ""
    ruls = [r.rul if r.rul is not None else 0.0 for r in rows]
    rul_ax.barh(y, ruls, color=colours, height=0.7, alpha=0.85)
    for yi, row in zip(y, rows, strict=True):
        if row.rul is not None:
            rul_ax.text(row.rul, yi, f" {row.rul:.1f}", va="center", fontsize=9)
        else:  # no RUL model covers this machine: say so, never draw a number
            rul_ax.text(0, yi, " - (no RUL model)", va="center", fontsize=9, color="0.4")
    rul_ax.set_xlabel(f"remaining useful life{unit}, latest estimate")
    rul_ax.grid(axis="x", alpha=0.3)
    if ruls:
        rul_ax.set_xlim(0, max(ruls) * 1.25 or 1)

    alerting = sum(r.state == "alerting" for r in rows)
    open_alerts = sum(r.open_alerts for r in rows)
    stamp = local(fleet.generated_ms)
    fig.suptitle(
        f"Fleet health: {len(rows)} assets, {alerting} alerting, {open_alerts} open alerts"
        f"   ({stamp:%Y-%m-%d %H:%M})",
        fontsize=13,
        fontweight="bold",
    )
    present = [s for s in STATE_COLOURS if any(r.state == s for r in rows)]
    score_ax.legend(
        handles=[Patch(color=STATE_COLOURS[s], label=s) for s in present],
        loc="lower right",
        fontsize=9,
    )
    if not rows:
        score_ax.text(0.5, 0.5, "no assets yet", transform=score_ax.transAxes, ha="center")
    return fig
