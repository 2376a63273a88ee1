"""``edgewatch sync status|now|retry|bench``: thin commands over :mod:`agent.sync`."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

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

from agent.cli._common import console, current_database, emit_json, err_console, invocation
from agent.cli._time import local_time
from agent.errors import SyncError
from agent.logs import printable
from agent.storage import migrate
from agent.sync.bench import bench_sync
from agent.sync.service import SyncService, retry_quarantined, sync_status

MIB = 1024 * 1024
#: Quarantined items listed in the readable status (the JSON has more).
QUARANTINE_LISTED = 5

app = typer.Typer(help="Cloud sync: backlog, drain now, retry refused items.", no_args_is_help=True)


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def _age(ms: int | None) -> str:
    if ms is None:
        return "never"
    seconds = max(0.0, time.time() - ms / 1000)
    return f"{local_time(ms)} ({seconds:.0f} s ago)"


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Backlog by kind, oldest item, last success and error, items the target refused."""
    settings = invocation(ctx).settings()
    with current_database(settings) as engine:
        info = sync_status(engine, settings)
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
    print_quarantined(info["quarantined_items"], info["quarantined"])
    used, budget = info["disk_used_bytes"] / MIB, info["disk_budget_bytes"] / MIB
    console.print(
        f"disk: {used:.1f} MiB of {budget:.0f} MiB"
        f" budget; loss ledger: {info['ledger_entries']} entries,"
        f" {info['ledger_items_dropped']} items dropped"
    )


def print_quarantined(count: int, newest: list[dict[str, Any]]) -> None:
    """The count of items the target refused for good and a table of the newest."""
    if not count:
        console.print("quarantined: none")
        return
    console.print(
        Text.assemble(
            ("quarantined: ", "bold red"),
            f"{_items(count)} the target refused for good; once it is fixed, "
            "`edgewatch sync retry --all` puts them back in line",
        ),
        highlight=False,
    )
    shown = newest[:QUARANTINE_LISTED]
    table = Table("since", "kind", "key", "error", title=f"newest {len(shown)} of {count}")
    for item in shown:
        # Keys carry asset names and errors quote keys: publisher text.
        table.add_row(
            local_time(item["since_ms"]),
            printable(str(item["kind"])),
            printable(str(item["key"])),
            printable(str(item["error"] or "")),
        )
    console.print(table)


@app.command("retry")
def retry(
    ctx: typer.Context,
    keys: Annotated[
        list[str] | None,
        typer.Argument(help="Object keys of quarantined items.", show_default=False),
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every quarantined item.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Put items the target refused for good back in line, once the target is fixed.

    The agent's next sync pass (or `edgewatch sync now`) uploads them; one the target
    still refuses is set aside again. Exit 1 when a given key was not quarantined.
    """
    if everything == bool(keys):
        raise typer.BadParameter(
            "name the quarantined items to retry (their keys) or give --all", param_hint="KEYS"
        )
    with current_database(invocation(ctx).settings()) as engine:
        result = retry_quarantined(engine, None if everything else keys)
    if as_json:
        emit_json({"requeued": result.requeued, "not_quarantined": result.not_quarantined})
    else:
        console.print(f"{_items(len(result.requeued))} back in line for upload")
    if result.not_quarantined:
        shown = ", ".join(result.not_quarantined[:QUARANTINE_LISTED])
        more = len(result.not_quarantined) - QUARANTINE_LISTED
        raise SyncError(
            f"not quarantined: {shown}" + (f" and {more} more" if more > 0 else ""),
            hint="`edgewatch sync status` lists the quarantined items",
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
    with current_database(settings) as engine:
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
    if as_json:
        emit_json({**produced, **vars(report)})
    else:
        refused = ""
        if report.quarantined:
            refused = f"; {_items(report.quarantined)} refused for good, set aside"
        console.print(
            f"uploaded {report.uploaded} items ({report.bytes:,} bytes) in "
            f"{report.seconds:.1f} s; backlog {report.remaining}{refused}"
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
