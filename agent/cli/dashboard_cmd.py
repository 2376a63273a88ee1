"""``edgewatch dashboard``: the web dashboard on a database alone (no agent running).

For a copy of a gateway's database, or beside an agent started without ``--http``:
the pages, the JSON API and the feedback forms of ``edgewatch run --http``
(docs/dashboard.md). Labels written here are queued for sync like the agent's.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from agent.cli._common import err_console, invocation
from agent.errors import EdgewatchError
from agent.logs import configure_logging


def dashboard(
    ctx: typer.Context,
    http: Annotated[
        str,
        typer.Option(
            "--http",
            metavar="HOST:PORT",
            help="Where to serve (default 127.0.0.1:8080; other than loopback needs the token).",
        ),
    ] = "127.0.0.1:8080",
    db: Annotated[
        Path | None,
        typer.Option("--db", help="Database file (default: from the configuration)."),
    ] = None,
) -> None:
    """Serve the web dashboard (fleet, assets, alerts, feedback) on a database file."""
    inv = invocation(ctx)
    inv.overrides.setdefault("dashboard", {})["address"] = http
    settings = inv.settings()
    configure_logging(inv.log_level or settings.logging.level, settings.logging.format)
    path = db or settings.storage.database_path
    if not path.exists():
        raise EdgewatchError(f"database {path} does not exist", hint="give --db FILE")
    # Imported here: Starlette, Jinja2 and uvicorn load only when a dashboard is served.
    try:
        from agent.dashboard import server
    except ImportError as exc:
        raise EdgewatchError(
            f"the dashboard needs the optional dependencies ({exc.name} is missing)",
            hint="pip install 'edgewatch[dashboard]'",
        ) from None

    async def serve() -> None:
        web, engine = server.for_database(settings, path)
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel if task else lambda: None)
        err_console.print(f"dashboard on {web.url} (Ctrl-C to stop)")
        try:
            await web.run()
        except asyncio.CancelledError:
            err_console.print("stopped")
        finally:
            engine.dispose()

    asyncio.run(serve())
