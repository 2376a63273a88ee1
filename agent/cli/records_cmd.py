"""``edgewatch records ...``: the local database as tables, JSON, CSV or Parquet.

Tables are for people (local time, units, newest first, 50 rows unless told);
the other formats are for tools (UTC ISO 8601 times, every matching row, oldest
first) and are written as rows arrive from the database.
"""

from __future__ import annotations

import csv
import enum
import getpass
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from agent.cli._common import console, err_console, invocation
from agent.cli._time import parse_when
from agent.errors import EdgewatchError
from agent.logs import printable
from agent.sqlite import open_engine
from agent.storage import labels, migrate, records
from agent.storage.records import Field, Filters, Kind, RecordSet

TABLE_LIMIT = 50
PARQUET_BATCH = 2000

app = typer.Typer(
    help="Show what the agent recorded: assets, predictions, alerts, events, ...",
    no_args_is_help=True,
)


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    PARQUET = "parquet"


AssetOpt = Annotated[str | None, typer.Option("--asset", "-a", help="Only this asset.")]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="From this time: 2h, 7d (ago), or ISO 8601.")
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="Before this time: 30m, 1d (ago), or ISO 8601.")
]
LimitOpt = Annotated[
    int | None,
    typer.Option("--limit", "-n", min=1, help=f"Most rows (tables: {TABLE_LIMIT}; else all)."),
]
FormatOpt = Annotated[
    Format | None,
    typer.Option("--format", "-f", help="table, json, csv or parquet (default: from --output)."),
]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
]
DbOpt = Annotated[
    Path | None, typer.Option("--db", help="Database file (default: from the configuration).")
]


def _show(
    ctx: typer.Context,
    kind: str,
    *,
    asset: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    fmt: Format | None,
    output: Path | None,
    db: Path | None,
    **flags: Any,
) -> None:
    fmt = fmt or _format_of(output)
    if fmt is Format.PARQUET and output is None:
        raise typer.BadParameter(
            "Parquet is binary: give a file with --output", param_hint="--format"
        )
    table = fmt is Format.TABLE
    filters = Filters(
        asset=asset,
        since_ms=None if since is None else parse_when(since, option="--since"),
        until_ms=None if until is None else parse_when(until, option="--until"),
        limit=limit if limit is not None else TABLE_LIMIT if table else None,
        newest_first=table,
        **flags,
    )
    path = db or invocation(ctx).settings().storage.database_path
    engine = open_engine(path, create=False, read_only=True)
    try:
        if asset is not None and not records.asset_exists(engine, asset):
            raise EdgewatchError(
                f"no asset named {asset!r} in {path}",
                hint="`edgewatch records assets` lists them",
            )
        with records.open_records(engine, kind, filters) as result, _sink(output, fmt) as out:
            written = _WRITERS[fmt](result, out)
        if table and filters.limit is not None and written >= filters.limit:
            total = records.count_beyond(engine, kind, filters)
            if total > written:
                err_console.print(
                    f"showing the newest {written} of {total} {kind}; "
                    "--limit N for more, --format csv --output FILE for all"
                )
        if output is not None:
            err_console.print(f"{written} {kind} written to {output}")
    finally:
        engine.dispose()


def _format_of(output: Path | None) -> Format:
    if output is not None:
        for f in (Format.JSON, Format.CSV, Format.PARQUET):
            if output.suffix.lower() == f".{f.value}":
                return f
    return Format.TABLE


@contextmanager
def _sink(output: Path | None, fmt: Format) -> Iterator[Any]:
    if fmt is Format.PARQUET:
        yield output
        return
    if output is None:
        yield sys.stdout
        return
    try:
        with output.open("w", encoding="utf-8", newline="") as handle:
            yield handle
    except OSError as exc:
        raise EdgewatchError(
            f"cannot write {output}: {exc.strerror}", hint="choose a writable path"
        ) from None


# --------------------------------------------------------------------- writers


def _local(ms: int | None) -> str:
    if ms is None:
        return ""
    moment = datetime.fromtimestamp(ms / 1000).astimezone()
    # The year only when it is not this one: tables must fit an 80-column terminal.
    short = moment.year == datetime.now().year
    return moment.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M")


def _utc(ms: int | None) -> str | None:
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _header(f: Field, sensor: bool) -> str:
    # Sensor names keep their underscores: the suffix is the unit (temp_c, flow_m3_h).
    name = printable(f.name) if sensor else f.name.replace("_", " ")
    return f"{name} ({f.unit})" if f.unit else name


def _cell(f: Field, value: Any) -> str:
    if value is None:
        # A missing number (RUL of a machine no RUL model covers) is "-", never a number.
        return "open" if f.name == "closed" else "-" if f.kind is Kind.FLOAT else ""
    if f.kind is Kind.TIME:
        return _local(value)
    if f.kind is Kind.FLOAT:
        if not math.isfinite(value):
            return "-"
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.2f}"
    if f.kind is Kind.BOOL:
        return "yes" if value else ""
    # Names, topics and payloads are publisher text: one visible line, whatever it holds.
    text = printable(str(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _write_table(result: RecordSet, out: IO[str]) -> int:
    zone = datetime.now().astimezone().tzname() or "local"
    table = Table(title=f"{result.kind} (times in {zone})", title_justify="left")
    shown = [i for i, f in enumerate(result.fields) if f.table]
    for i in shown:
        f = result.fields[i]
        numeric = f.kind in (Kind.FLOAT, Kind.INT)
        header = _header(f, sensor=result.kind == "readings" and i >= 3)
        table.add_column(
            header,
            justify="right" if numeric else "left",
            no_wrap=f.kind is Kind.TIME or f.name == "asset",
            # Short words ("severity", "state") stay whole; long headers may wrap.
            min_width=None if numeric else min(len(header), 8),
        )
    n = 0
    for row in result.rows:
        style = "bold red" if _alarming(result, row) else ""
        table.add_row(*(_cell(result.fields[i], row[i]) for i in shown), style=style)
        n += 1
    target = console if out is sys.stdout else Console(file=out, width=200, markup=False)
    if n == 0:
        target.print(f"no {result.kind} match")
    else:
        target.print(table)
    return n


def _alarming(result: RecordSet, row: tuple[Any, ...]) -> bool:
    names = [f.name for f in result.fields]
    if result.kind == "alerts":
        return bool(row[names.index("status")] == "open")
    if result.kind == "predictions":
        return bool(row[names.index("is_anomaly")])
    if result.kind == "assets":
        return bool(row[names.index("state")] == "alerting")
    return False


def _plain(f: Field, value: Any) -> Any:
    if f.kind is Kind.TIME:
        return _utc(value)
    if f.kind is Kind.FLOAT and value is not None and not math.isfinite(value):
        return None
    return value


def _write_json(result: RecordSet, out: IO[str]) -> int:
    """One JSON array, written a row at a time (valid JSON even when empty)."""
    names = [f.name for f in result.fields]
    out.write("[")
    n = 0
    for row in result.rows:
        doc = {k: _plain(f, v) for k, f, v in zip(names, result.fields, row, strict=True)}
        out.write(("\n" if n == 0 else ",\n") + orjson.dumps(doc).decode())
        n += 1
    out.write("\n]\n" if n else "]\n")
    return n


def _write_csv(result: RecordSet, out: IO[str]) -> int:
    writer = csv.writer(out)
    writer.writerow([f.name for f in result.fields])
    n = 0
    for row in result.rows:
        writer.writerow(
            ["" if v is None else _plain(f, v) for f, v in zip(result.fields, row, strict=True)]
        )
        n += 1
    return n


def _write_parquet(result: RecordSet, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        Kind.TIME: pa.timestamp("ms", tz="UTC"),
        Kind.FLOAT: pa.float64(),
        Kind.INT: pa.int64(),
        Kind.BOOL: pa.bool_(),
        Kind.TEXT: pa.string(),
    }
    schema = pa.schema([(f.name, types[f.kind]) for f in result.fields])
    n = 0
    try:
        with pq.ParquetWriter(out, schema) as writer:
            batch: list[tuple[Any, ...]] = []
            for row in result.rows:
                batch.append(row)
                if len(batch) >= PARQUET_BATCH:
                    writer.write_table(_arrow(batch, schema))
                    n += len(batch)
                    batch = []
            if batch or n == 0:
                writer.write_table(_arrow(batch, schema))
                n += len(batch)
    except OSError as exc:
        raise EdgewatchError(f"cannot write {out}: {exc}", hint="choose a writable path") from None
    return n


def _arrow(rows: list[tuple[Any, ...]], schema: Any) -> Any:
    import pyarrow as pa

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pa.Table.from_arrays(
        [pa.array(list(c), type=field.type) for c, field in zip(columns, schema, strict=True)],
        schema=schema,
    )


_WRITERS: dict[Format, Any] = {
    Format.TABLE: _write_table,
    Format.JSON: _write_json,
    Format.CSV: _write_csv,
    Format.PARQUET: _write_parquet,
}


# -------------------------------------------------------------------- commands


@app.command("assets")
def assets(
    ctx: typer.Context,
    asset: AssetOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    db: DbOpt = None,
) -> None:
    """Every asset: state, newest score against its threshold, RUL, open alerts.

    --since/--until select assets by when they were last seen.
    """
    _show(
        ctx,
        "assets",
        asset=asset,
        since=since,
        until=until,
        limit=limit,
        fmt=fmt,
        output=output,
        db=db,
    )


@app.command("predictions")
def predictions(
    ctx: typer.Context,
    asset: AssetOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = None,
    anomalies_only: Annotated[
        bool, typer.Option("--anomalies-only", help="Only windows judged anomalous.")
    ] = False,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    db: DbOpt = None,
) -> None:
    """Anomaly scores and RUL estimates, one row per scored window."""
    _show(
        ctx,
        "predictions",
        asset=asset,
        since=since,
        until=until,
        limit=limit,
        fmt=fmt,
        output=output,
        db=db,
        anomalies_only=anomalies_only,
    )


@app.command("alerts")
def alerts(
    ctx: typer.Context,
    asset: AssetOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only alerts still open.")] = False,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    db: DbOpt = None,
) -> None:
    """Alerts (anomaly, RUL): opened, closed, severity, peak score.

    --since/--until select the alerts active at some time in that range.
    """
    _show(
        ctx,
        "alerts",
        asset=asset,
        since=since,
        until=until,
        limit=limit,
        fmt=fmt,
        output=output,
        db=db,
        open_only=open_only,
    )


@app.command("dead-letters")
def dead_letters(
    ctx: typer.Context,
    asset: AssetOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Only this reason, e.g. invalid_json.")
    ] = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    db: DbOpt = None,
) -> None:
    """Rejected messages with their reason and the start of their payload."""
    _show(
        ctx,
        "dead-letters",
        asset=asset,
        since=since,
        until=until,
        limit=limit,
        fmt=fmt,
        output=output,
        db=db,
        reason=reason,
    )


@app.command("events")
def events(
    ctx: typer.Context,
    asset: AssetOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = None,
    level: Annotated[
        str | None, typer.Option("--level", help="Only this level: info, warning, error.")
    ] = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    db: DbOpt = None,
) -> None:
    """The agent's own events: starts, commissioning, stream gaps, baseline resets."""
    _show(
        ctx,
        "events",
        asset=asset,
        since=since,
        until=until,
        limit=limit,
        fmt=fmt,
        output=output,
        db=db,
        level=level,
    )


@app.command("summaries")
def summaries(
    ctx: typer.Context,
    asset: AssetOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    db: DbOpt = None,
) -> None:
    """Per-asset summaries per period (what cloud sync uploads)."""
    _show(
        ctx,
        "summaries",
        asset=asset,
        since=since,
        until=until,
        limit=limit,
        fmt=fmt,
        output=output,
        db=db,
    )


@app.command("readings")
def readings(
    ctx: typer.Context,
    asset: AssetOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    db: DbOpt = None,
) -> None:
    """Raw readings kept for retraining, one column per sensor (units in the names)."""
    _show(
        ctx,
        "readings",
        asset=asset,
        since=since,
        until=until,
        limit=limit,
        fmt=fmt,
        output=output,
        db=db,
    )


# ------------------------------------------------------------ operator feedback


class LabelChoice(enum.StrEnum):
    FAULT = "fault"
    FALSE_ALARM = "false_alarm"
    MAINTENANCE = "maintenance"


ByOpt = Annotated[
    str | None,
    typer.Option("--by", help="Who says so (default: the login name)."),
]


def _writable(ctx: typer.Context, db: Path | None) -> Any:
    """The database for a write, refused unless at the newest schema."""
    path = db or invocation(ctx).settings().storage.database_path
    return migrate.ensure_current(path)


def _login() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


@app.command("label")
def label(
    ctx: typer.Context,
    alert_id: Annotated[int, typer.Argument(help="The alert's id (`records alerts`).")],
    what: Annotated[LabelChoice, typer.Argument(help="fault, false_alarm or maintenance.")],
    note: Annotated[
        str | None, typer.Option("--note", help="What was found, in a sentence or two.")
    ] = None,
    by: ByOpt = None,
    db: DbOpt = None,
) -> None:
    """Say what an alert was: a real fault, a false alarm or planned maintenance.

    The newest label counts; earlier ones stay as history. The label is synced (kind
    `label`) and goes into the retraining export. An unacknowledged alert is
    acknowledged too.
    """
    settings = invocation(ctx).settings()
    engine = _writable(ctx, db)
    try:
        done = labels.label_alert(
            engine,
            alert_id,
            what.value,
            agent=settings.identity.agent,
            note=note,
            by=by if by is not None else _login(),
            sync=settings.sync.enabled,
        )
    finally:
        engine.dispose()
    ack = " and acknowledged" if done.acknowledged else ""
    console.print(f"alert {alert_id} labelled {done.label.label}{ack}")


@app.command("ack")
def ack(
    ctx: typer.Context,
    alert_id: Annotated[int, typer.Argument(help="The alert's id (`records alerts`).")],
    by: ByOpt = None,
    db: DbOpt = None,
) -> None:
    """Acknowledge an alert: someone has seen it (the first acknowledgement is kept)."""
    engine = _writable(ctx, db)
    try:
        done = labels.acknowledge_alert(engine, alert_id, by=by if by is not None else _login())
    finally:
        engine.dispose()
    if done.changed:
        console.print(f"alert {alert_id} acknowledged")
    else:
        who = f" by {printable(done.by)}" if done.by else ""
        console.print(
            f"alert {alert_id} was already acknowledged{who} at {_local(done.acknowledged_ms)}"
        )
