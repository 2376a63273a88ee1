"""``edgewatch baseline list|reset``: each asset's learned healthy baseline."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agent.cli._common import console, current_database, emit_json, invocation
from agent.cli._time import local_time
from agent.domain import AssetState
from agent.errors import EdgewatchError
from agent.inference.baselines import BaselineStore
from agent.logs import printable
from agent.storage import queries

app = typer.Typer(help="Show or reset the per-asset healthy baselines.", no_args_is_help=True)


@app.command("list")
def list_baselines(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every asset's state (commissioning, healthy, alerting) and baseline."""
    settings = invocation(ctx).settings()
    with current_database(settings) as engine:
        rows = queries.asset_baselines(engine, settings.identity.site)
    store = BaselineStore(settings.storage.data_dir / "baselines")
    for row in rows:
        row["baseline_on_disk"] = store.exists(row["asset"])
    if as_json:
        emit_json(rows)
        return
    table = Table("asset", "state", "baseline", "learnt from readings", "commissioned", "last seen")
    for row in rows:
        table.add_row(
            printable(row["asset"]),
            printable(row["state"]),
            row["baseline_version"] or ("on disk" if row["baseline_on_disk"] else "-"),
            _span(row["baseline_first_ms"], row["baseline_last_ms"]),
            local_time(row["commissioned_ms"]),
            local_time(row["last_seen_ms"]),
        )
    console.print(table)


def _span(first_ms: int | None, last_ms: int | None) -> str:
    """The data times of the readings a baseline was learnt from (a replay's are its
    own, not when it was commissioned); "-" for baselines learnt before they were kept."""
    if first_ms is None or last_ms is None:
        return "-"
    return f"{local_time(first_ms)} to {local_time(last_ms)}"


@app.command("reset")
def reset(
    ctx: typer.Context,
    asset: Annotated[str, typer.Argument(help="Asset whose baseline is learned again.")],
) -> None:
    """Forget an asset's baseline (after maintenance): its next samples become the new one.

    A running agent notices within seconds; the old baseline is kept under
    baselines/retired/ for inspection.
    """
    settings = invocation(ctx).settings()
    store = BaselineStore(settings.storage.data_dir / "baselines")
    with current_database(settings) as engine:
        known = queries.set_asset_state(
            engine, settings.identity.site, asset, AssetState.COMMISSIONING
        )
    retired = store.retire(asset)
    if not known and retired is None:
        raise EdgewatchError(
            f"no asset named {asset!r} at site {settings.identity.site!r}",
            hint="`edgewatch baseline list` shows the assets",
        )
    where = f"; old baseline kept in {retired}" if retired else ""
    console.print(
        f"{printable(asset)}: baseline reset, commissioning again from its next samples{where}"
    )
