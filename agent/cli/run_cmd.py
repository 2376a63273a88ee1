"""``edgewatch run``: the long-running agent (systemd runs this in the foreground)."""

from __future__ import annotations

import asyncio

import typer

from agent.cli._common import invocation
from agent.logs import configure_logging
from agent.memory import limit_malloc_arenas


def run(ctx: typer.Context) -> None:
    """Run the agent until SIGTERM or Ctrl-C: subscribe, score, record, alert."""
    inv = invocation(ctx)
    settings = inv.settings()
    configure_logging(inv.log_level or settings.logging.level, settings.logging.format)
    limit_malloc_arenas()
    # Imported here: torch loads with the runtime, and `--help` should stay instant.
    from agent.runtime import run_agent

    asyncio.run(run_agent(settings))
