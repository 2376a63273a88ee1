"""``edgewatch report``: one asset's history or the fleet's health as a picture."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from agent.cli._common import console, invocation
from agent.cli._time import parse_when
from agent.logs import printable
from agent.sqlite import open_engine


def report(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write (.png, or .html).")],
    asset: Annotated[
        str | None, typer.Option("--asset", "-a", help="Report on this asset.")
    ] = None,
    fleet: Annotated[
        bool, typer.Option("--fleet", help="Every asset's current health in one figure.")
    ] = False,
    since: Annotated[
        str, typer.Option("--since", help="Asset report from: 24h, 7d (ago), or ISO 8601.")
    ] = "24h",
    until: Annotated[
        str, typer.Option("--until", help="Asset report until: now, 1h (ago), or ISO 8601.")
    ] = "now",
    as_html: Annotated[
        bool, typer.Option("--html", help="One self-contained HTML file (image and tables).")
    ] = False,
    db: Annotated[
        Path | None, typer.Option("--db", help="Database file (default: from the configuration).")
    ] = None,
) -> None:
    """Plot an asset (sensors, anomaly score vs threshold, alerts, RUL) or the fleet.

    Examples: `edgewatch report --asset pump-007 --since 7d --out pump-007.png`,
    `edgewatch report --fleet --out fleet.html --html`.
    """
    if (asset is None) == (not fleet):
        raise typer.BadParameter("give either --asset NAME or --fleet", param_hint="--asset")
    html = as_html or out.suffix.lower() in (".html", ".htm")
    now_ms = time.time_ns() // 1_000_000
    since_ms = parse_when(since, now_ms=now_ms, option="--since")
    until_ms = parse_when(until, now_ms=now_ms, option="--until")
    if until_ms <= since_ms:
        raise typer.BadParameter("--until must be later than --since", param_hint="--until")
    settings = invocation(ctx).settings()
    # Imported here: matplotlib loads only when a report is drawn.
    from agent.reporting import data, figures, render

    engine = open_engine(db or settings.storage.database_path, create=False, read_only=True)
    try:
        if asset is not None:
            series = data.load_asset(
                engine, asset, since_ms, until_ms, rul_alert_below=settings.model.rul_alert_below
            )
            png = render.png_bytes(figures.asset_figure(series))
            content = render.asset_html(series, png) if html else png
            what = f"{asset}: {len(series.score.ts_ms)} points, {len(series.alerts)} alerts"
        else:
            health = data.load_fleet(engine, now_ms)
            png = render.png_bytes(figures.fleet_figure(health))
            content = render.fleet_html(health, png) if html else png
            alerting = sum(r.state == "alerting" for r in health.rows)
            what = f"fleet: {len(health.rows)} assets, {alerting} alerting"
    finally:
        engine.dispose()
    render.write(out, content)
    console.print(f"{printable(what)}; report written to {out}")
