"""``edgewatch run``: the long-running agent (systemd runs this in the foreground)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from agent.cli._common import invocation
from agent.logs import configure_logging
from agent.memory import limit_malloc_arenas


def run(
    ctx: typer.Context,
    metrics_addr: Annotated[
        str | None,
        typer.Option(
            "--metrics-addr",
            metavar="HOST:PORT",
            help="Serve Prometheus metrics on HOST:PORT, e.g. 127.0.0.1:9108 (default: off).",
        ),
    ] = None,
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            metavar="HOST:PORT",
            help="Serve the web dashboard on HOST:PORT, e.g. 127.0.0.1:8080 (default: off).",
        ),
    ] = None,
) -> None:
    """Run the agent until SIGTERM or Ctrl-C: subscribe, score, record, alert.

    Under systemd (Type=notify) it reports READY once subscribed and pings the
    watchdog while it is making progress.
    """
    inv = invocation(ctx)
    if metrics_addr is not None:
        inv.overrides.setdefault("metrics", {})["address"] = metrics_addr
    if http is not None:
        inv.overrides.setdefault("dashboard", {})["address"] = http
    settings = inv.settings()
    configure_logging(inv.log_level or settings.logging.level, settings.logging.format)
    limit_malloc_arenas()
    # Imported here: torch loads with the runtime, and `--help` should stay instant.
    from agent.runtime import run_agent

    asyncio.run(run_agent(settings))
