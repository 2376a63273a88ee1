"""``edgewatch simulate``: the pump fleet, dataset export and dataset replay."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.cli._common import console, err_console
from simulators import dataset as dataset_lib

app = typer.Typer(
    name="simulate",
    help="Simulate a degrading pump fleet, export datasets, replay public datasets.",
    no_args_is_help=True,
)

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?", re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"10m"``, ``"1h30m"``, ``"3d"`` -> seconds."""
    compact = text.strip().replace(" ", "")
    total = 0.0
    pos = 0
    for match in _DURATION_RE.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[(match.group(2) or "s").lower()]
        pos = match.end()
    if pos != len(compact) or not compact:
        raise typer.BadParameter(f"{text!r} is not a duration (e.g. 90s, 10m, 1h30m, 3d)")
    return total


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


@app.command("dataset")
def dataset(
    out: Annotated[Path, typer.Option("--out", help="Directory to write into.")],
    assets: Annotated[int, typer.Option("--assets", min=1, help="Number of pumps.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    fmt: Annotated[
        str, typer.Option("--format", help="parquet or csv.", case_sensitive=False)
    ] = "parquet",
    duration: Annotated[
        str, typer.Option("--duration", help="Simulated time per asset, e.g. 3d, 12h.")
    ] = "3d",
    rate_hz: Annotated[
        float, typer.Option("--rate-hz", min=0.0, help="Samples per second per asset.")
    ] = dataset_lib.DEFAULT_RATE_HZ,
    fault_fraction: Annotated[
        float, typer.Option("--fault-fraction", min=0.0, max=1.0, help="Share that fail.")
    ] = 0.8,
    sensor_fault_fraction: Annotated[
        float,
        typer.Option("--sensor-fault-fraction", min=0.0, max=1.0, help="Share with a bad sensor."),
    ] = 0.0,
) -> None:
    """Write run-to-failure pump data (telemetry + assets.json) without a broker."""
    fmt = fmt.lower()
    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter("use parquet or csv", param_hint="--format")
    if rate_hz <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--rate-hz")
    with _progress() as progress:
        task = progress.add_task("simulating", total=assets)
        paths = dataset_lib.write_dataset(
            out,
            assets,
            seed,
            fmt="csv" if fmt == "csv" else "parquet",
            duration_s=parse_duration(duration),
            rate_hz=rate_hz,
            fault_fraction=fault_fraction,
            sensor_fault_fraction=sensor_fault_fraction,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    for path in paths:
        console.print(f"wrote {path}")
