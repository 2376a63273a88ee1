"""``edgewatch db upgrade|current|history``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agent.cli._common import console, emit_json, invocation
from agent.sqlite import open_engine
from agent.storage import migrate

app = typer.Typer(help="Manage the local database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="Skip the backup copy before migrating.")
    ] = False,
) -> None:
    """Create the database or migrate it to the newest schema (backup first)."""
    path = invocation(ctx).settings().storage.database_path
    result = migrate.upgrade(path, revision, backup=not no_backup)
    if not result.changed:
        console.print(f"{path}: already at schema {result.to_revision}")
        return
    start = result.from_revision or "empty"
    console.print(f"{path}: schema {start} -> {result.to_revision}")
    if result.backup is not None:
        console.print(f"backup of the previous database: {result.backup}")


@app.command("current")
def current(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the database's schema revision and whether it is the newest."""
    path = invocation(ctx).settings().storage.database_path
    engine = open_engine(path, create=False)
    try:
        rev = migrate.current_revision(engine)
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if as_json:
        emit_json({"database": str(path), "current": rev, "head": head, "up_to_date": rev == head})
        return
    state = "up to date" if rev == head else f"behind head {head}: run `edgewatch db upgrade`"
    console.print(f"{path}: schema {rev or 'empty'} ({state})")


@app.command("history")
def history(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the schema revisions this edgewatch knows, newest first."""
    revisions = migrate.history()
    if as_json:
        emit_json(
            [
                {"revision": r.revision, "down_revision": r.down_revision, "message": r.message}
                for r in revisions
            ]
        )
        return
    table = Table("revision", "previous", "description")
    for r in revisions:
        table.add_row(
            r.revision + (" (head)" if r.is_head else ""), r.down_revision or "-", r.message
        )
    console.print(table)
