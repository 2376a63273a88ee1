"""``edgewatch sync status|now|bench``: thin commands over :mod:`agent.sync`."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from agent.cli._common import console, emit_json, err_console, invocation
from agent.errors import SyncError
from agent.logs import printable
from agent.storage import migrate
from agent.sync.bench import bench_sync
from agent.sync.service import SyncService, sync_status

MIB = 1024 * 1024

app = typer.Typer(help="Cloud sync: backlog, drain now.", no_args_is_help=True)


def _age(ms: int | None) -> str:
    if ms is None:
        return "never"
    seconds = max(0.0, time.time() - ms / 1000)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ms / 1000))} ({seconds:.0f} s ago)"


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Backlog by kind, oldest item, last success and last error."""
    settings = invocation(ctx).settings()
    engine = migrate.ensure_current(settings.storage.database_path)
    try:
        info = sync_status(engine, settings)
    finally:
        engine.dispose()
    if as_json:
        emit_json(info)
        return
    console.print(f"target: {info['target']}", highlight=False, soft_wrap=True)
    table = Table("kind", "items", "bytes", title="backlog")
    for kind, row in sorted(info["backlog"].items()):
        table.add_row(printable(kind), str(row["items"]), f"{row['bytes']:,}")
    table.add_row("total", str(info["backlog_items"]), f"{info['backlog_bytes']:,}", style="bold")
    console.print(table)
    oldest = info["oldest_age_s"]
    console.print(f"oldest item: {'none' if oldest is None else f'{oldest:.0f} s old'}")
    console.print(f"last success: {_age(info['last_success_ms'])}")
    if info["last_error"] is not None:
        style = "yellow" if info["healthy"] else "bold red"
        # The error may quote an object key, and keys carry asset names.
        line = Text.assemble(
            "last error: ",
            (printable(str(info["last_error"])), style),
            f" at {_age(info['last_error_ms'])}",
        )
        console.print(line, highlight=False)
    else:
        console.print("last error: none")
    used, budget = info["disk_used_bytes"] / MIB, info["disk_budget_bytes"] / MIB
    console.print(
        f"disk: {used:.1f} MiB of {budget:.0f} MiB"
        f" budget; loss ledger: {info['ledger_entries']} entries,"
        f" {info['ledger_items_dropped']} items dropped"
    )


@app.command("now")
def now(
    ctx: typer.Context,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the pass report as JSON.")] = False,
) -> None:
    """Produce what is due and run one drain pass now (retries wait for nothing)."""
    settings = invocation(ctx).settings()
    engine = migrate.ensure_current(settings.storage.database_path)
    try:
        service = SyncService(settings, engine)
        produced = service.produce()
        bar = Progress(
            TextColumn("uploading"),
            BarColumn(),
            MofNCompleteColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not progress or as_json,
        )
        with bar:
            task = bar.add_task("upload", total=None)

            def update(done: int, total: int, size: int) -> None:
                bar.update(task, completed=done, total=total)

            report = asyncio.run(service.drain(ignore_backoff=True, on_progress=update))
    finally:
        engine.dispose()
    if as_json:
        emit_json({**produced, **vars(report)})
    else:
        console.print(
            f"uploaded {report.uploaded} items ({report.bytes:,} bytes) in "
            f"{report.seconds:.1f} s; backlog {report.remaining}"
        )
    if report.error is not None:
        raise SyncError(report.error + "; backlog kept")


def bench(
    assets: Annotated[int, typer.Option(help="Assets in the backlog.")] = 50,
    hours: Annotated[float, typer.Option(help="Hours of backlog.")] = 24.0,
    period_s: Annotated[int, typer.Option("--period-s", help="Summary period.")] = 300,
    concurrency: Annotated[int, typer.Option(help="Uploads in flight.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Drain a backlog of summaries to a local moto S3 server; print objects/s and MB/s."""
    with tempfile.TemporaryDirectory(prefix="edgewatch-sync-bench-") as tmp:
        db = Path(tmp) / "bench.db"
        migrate.upgrade(db)
        bar = Progress(
            TextColumn("draining"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=as_json,
        )
        with bar:
            task = bar.add_task("drain", total=None)
            report = bench_sync(
                db,
                Path(tmp),
                assets=assets,
                hours=hours,
                period_s=period_s,
                concurrency=concurrency,
                on_progress=lambda done, total, _: bar.update(task, completed=done, total=total),
            )
    if as_json:
        emit_json(report.as_dict())
        return
    console.print(
        f"drained {report.objects} objects ({report.bytes / 1e6:.2f} MB) from {report.assets} "
        f"assets x {report.hours:g} h at {report.period_s} s summaries in "
        f"{report.drain_s:.1f} s: {report.objects_per_s:.0f} objects/s, "
        f"{report.mb_per_s:.2f} MB/s (concurrency {report.concurrency}; "
        f"{report.objects_in_bucket} objects in the bucket)"
    )
