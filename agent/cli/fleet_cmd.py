"""``edgewatch fleet retrain | evaluate | status``: the cloud side of the model loop.

Thin rendering over :mod:`models.fleet` (docs/fleet.md). Torch and, for ``--engine ray``,
Ray load only when a command needs them; Ray is the optional ``edgewatch[fleet]`` extra.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.cli._common import console, emit_json, err_console
from agent.errors import ModelError

if TYPE_CHECKING:
    from models.fleet.compare import BundleResult, Comparison

app = typer.Typer(
    help="Fleet retraining from the gateways' synced data (docs/fleet.md).",
    no_args_is_help=True,
)


class Engine(StrEnum):
    local = "local"
    ray = "ray"


_DATA = typer.Option(
    "--data", help="Sync target the gateways upload to: file:///path or s3://bucket/prefix."
)


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout meanwhile to stderr, at the descriptor level.

    Ray's raylet and log monitor print warnings to the driver's stdout; ``--json``
    promises one JSON document there, and a table reader expects our lines alone.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _bar(disable: bool) -> Progress:
    return Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=disable,
    )


def _utc(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@app.command("retrain")
def retrain(
    data: Annotated[str, _DATA],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory (or .tar.gz) to write.")],
    profile: Annotated[
        str, typer.Option("--profile", help="Training profile (pump: the shipped pump bundle's).")
    ] = "pump",
    engine: Annotated[
        Engine,
        typer.Option("--engine", help="local: this process; ray: Ray Data and Ray Train."),
    ] = Engine.local,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Ray cluster (ray://head:10001, host:port, auto); default: a local instance.",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=256, help="Training workers (CPU each).")
    ] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of split, shards and weights.")] = 0,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Epochs (default: the profile's).")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--ray-storage",
            help="Where Ray Train keeps the checkpoint (multi-node: a shared path or s3://).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train the profile's networks on every gateway's retraining data and operator labels."""
    from models.fleet.profiles import profile as find_profile
    from models.fleet.retrain import RetrainOptions
    from models.fleet.retrain import retrain as run_retrain

    if engine is Engine.ray:
        from models.fleet.engines import require_ray

        require_ray()  # a missing extra fails before any data is read
    options = RetrainOptions(
        data=data,
        profile=find_profile(profile),
        out=out,
        engine=engine.value,
        address=address,
        workers=workers,
        seed=seed,
        epochs=epochs,
        storage=storage,
    )
    with _bar(as_json) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)

        with _stdout_to_stderr():
            report = run_retrain(options, update)
    training = report.manifest_training
    seen = training["data"]
    throughput = training["throughput"]
    weights = (Path(report.bundle) / "manifest.json").parent / "anomaly.safetensors"
    digest = _sha256(weights) if weights.is_file() else None
    if as_json:
        emit_json(
            {
                "bundle": str(report.bundle),
                "version": report.version,
                "anomaly_weights_sha256": digest,
                "data": seen,
                "throughput": throughput,
                "metrics": report.metrics,
                "epochs_run": training["anomaly"]["epochs_run"],
                "stopped_by": training["anomaly"]["stopped_by"],
            }
        )
        return
    console.print(f"wrote {report.bundle} ({report.version})")
    console.print(
        f"data: {len(seen['gateways'])} gateways, {seen['assets']} assets, {seen['rows']:,} rows "
        f"({_utc(seen['first_ts_ms'])} to {_utc(seen['last_ts_ms'])} UTC), "
        f"{seen['files']} files, {_size(seen['bytes'])}"
    )
    labels = seen["labels"]
    console.print(
        "labels: "
        + ", ".join(f"{k} {v}" for k, v in labels.items())
        + f"; rows by class {seen['rows_by_class']}"
    )
    console.print(
        f"split by asset: {len(seen['training_assets'])} training, "
        f"{len(seen['validation_assets'])} validation ({', '.join(seen['validation_assets'])})"
    )
    read = throughput["read"]
    console.print(
        f"read ({read['engine']}): {read['rows']:,.0f} rows in {read['seconds']:.1f} s, "
        f"{read['rows_per_s']:,.0f} rows/s ({read['rows_per_s_per_reader']:,.0f} per reader)"
    )
    train = throughput["train"]
    for w in train["per_worker"]:
        console.print(
            f"train ({train['engine']}) worker {w['rank']}: {w['windows_trained']:,} windows, "
            f"{w['windows_per_s']:,.0f} windows/s, {w['rows_per_s']:,.0f} rows/s"
        )
    console.print(
        f"epochs run {training['anomaly']['epochs_run']} ({training['anomaly']['stopped_by']}), "
        f"fleet threshold {report.metrics['anomaly_fleet_threshold']:.3f}, "
        f"anomaly weights sha256 {digest[:16] if digest else '-'}"
    )


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fmt(value: float | None, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _row(role: str, result: BundleResult) -> list[str]:
    pooled = result.pooled
    return [
        role,
        result.version,
        _fmt(pooled.precision),
        _fmt(pooled.recall),
        _fmt(pooled.f1),
        _fmt(pooled.far, ".4f"),
        _fmt(result.median_delay_rows, ".0f"),
        str(result.false_alarms),
        str(result.labelled_false_alarms),
    ]


def render_comparison(comparison: Comparison) -> Table:
    table = Table(title="validation assets, scored as the gateways score")
    names = ("bundle", "version", "precision", "recall", "F1", "FAR", "delay")
    for name in (*names, "false alarms", "of them labelled"):
        table.add_column(name, justify="left" if name in ("bundle", "version") else "right")
    table.add_row(*_row("candidate", comparison.candidate))
    table.add_row(*_row("incumbent", comparison.incumbent))
    return table


@app.command("evaluate")
def evaluate(
    candidate: Annotated[Path, typer.Option("--candidate", help="Bundle from `fleet retrain`.")],
    data: Annotated[str, _DATA],
    incumbent: Annotated[
        str,
        typer.Option("--incumbent", help="Bundle the gateways run now (path or shipped name)."),
    ] = "pump",
    baseline_rows: Annotated[
        int,
        typer.Option("--baseline-rows", min=50, help="Readings each asset commissions on."),
    ] = 1440,
    seed: Annotated[int, typer.Option("--seed", help="Commissioning seed.")] = 0,
    f1_tolerance: Annotated[
        float,
        typer.Option(
            "--f1-tolerance",
            min=0.0,
            max=1.0,
            help="How much lower the candidate's F1 may be and still count as no worse.",
        ),
    ] = 0.01,
    publish: Annotated[
        bool,
        typer.Option("--publish", help="Publish the candidate if it beats the incumbent."),
    ] = False,
    repo: Annotated[
        str | None, typer.Option("--repo", help="Update repository URL (with --publish).")
    ] = None,
    keys: Annotated[
        Path | None, typer.Option("--keys", help="Keys folder (with --publish).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Replay the candidate's validation assets through both bundles; F1, FAR, delay,
    false alarms removed; --publish signs a better candidate into the update repository."""
    if publish and (repo is None or keys is None):
        raise typer.BadParameter("--publish needs --repo and --keys", param_hint="--publish")
    from models.bundle import load_bundle
    from models.bundles import SHIPPED, default_bundle_path
    from models.fleet.compare import compare

    cand = load_bundle(candidate)
    inc_path = default_bundle_path(incumbent) if incumbent in SHIPPED else Path(incumbent)
    inc = load_bundle(inc_path)
    with _bar(as_json) as bar:
        task = bar.add_task("evaluate", total=None)

        def update(done: int, total: int, _asset: str) -> None:
            bar.update(task, completed=done, total=total)

        comparison = compare(
            cand,
            inc,
            data,
            baseline_rows=baseline_rows,
            seed=seed,
            f1_tolerance=f1_tolerance,
            progress=update,
        )
    published: dict[str, Any] | None = None
    if publish and comparison.better():
        from models.updates.repository import publish as publish_bundle

        assert repo is not None and keys is not None
        done = publish_bundle(candidate, repo, keys)
        published = {"version": done.version, "target": done.target_path, "repo": repo}
    if as_json:
        emit_json({**comparison.as_dict(), "published": published})
    else:
        console.print(render_comparison(comparison))
        console.print(
            f"fault rows {comparison.fault_rows:,}, rows labelled false alarm or maintenance "
            f"{comparison.labelled_false_alarm_rows:,}; false alarms removed: "
            f"{comparison.false_alarms_removed}"
        )
        verdict = (
            "better than the incumbent"
            if comparison.better()
            else "no worse than the incumbent"
            if comparison.no_worse()
            else "worse than the incumbent"
        )
        c_f1, i_f1 = comparison.candidate.pooled.f1, comparison.incumbent.pooled.f1
        console.print(
            f"candidate: {verdict} (F1 {_fmt(c_f1)} against {_fmt(i_f1)}, tolerance "
            f"{comparison.f1_tolerance}; FAR and false alarms may not rise)"
        )
        if comparison.skipped_assets:
            console.print(f"not replayed: {', '.join(comparison.skipped_assets)}")
        if published is not None:
            console.print(f"published {published['version']} to {repo}")
    if publish and published is None:
        raise ModelError(
            f"not published: {cand.version} does not beat {inc.version} on the validation assets",
            hint="retrain with more data or labels; the repository is unchanged",
        )


@app.command("status")
def status(
    data: Annotated[str, _DATA],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Gateways seen, their last upload, how far each kind's data lags, volume per kind."""
    from models.fleet.catalog import dedupe
    from models.fleet.status import fleet_status
    from models.fleet.store import Store

    store = Store(data)
    entries, duplicates, ignored = dedupe(store.list())
    doc = fleet_status(entries)
    doc.update(url=data, duplicate_keys=duplicates, ignored_objects=ignored)
    if as_json:
        emit_json(doc)
        return
    if not entries:
        console.print(f"nothing synced by edgewatch gateways under {data}")
        return
    table = Table(title=f"gateways under {data}")
    for name in ("gateway", "assets", "last upload (UTC)", "newest data lag", "ledger"):
        table.add_column(name)
    kinds = sorted(doc["kinds"])
    for kind in kinds:
        table.add_column(kind, justify="right")
    for gw in doc["gateways"]:
        lags = [k["lag_s"] for k in gw["kinds"].values() if k["lag_s"] is not None]
        table.add_row(
            gw["gateway"],
            str(gw["assets"]),
            _utc(gw["last_upload_ms"]),
            _duration(min(lags)) if lags else "-",
            str(gw["ledger_entries"]),
            *[
                f"{gw['kinds'][k]['objects']} / {_size(gw['kinds'][k]['bytes'])}"
                if k in gw["kinds"]
                else "-"
                for k in kinds
            ],
        )
    console.print(table)
    total = sum(v["bytes"] for v in doc["kinds"].values())
    console.print(
        f"{len(doc['gateways'])} gateways, {len(entries)} objects, {_size(total)}; "
        "per kind: objects / bytes (a gateway's own backlog: `edgewatch sync status` on it)"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
