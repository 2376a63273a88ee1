"""``edgewatch status``: is the agent running and healthy? (for people and monitoring)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agent import outbox
from agent.cli._common import console, emit_json, invocation
from agent.cli.sync_cmd import QUARANTINE_LISTED, print_quarantined
from agent.logs import printable
from agent.settings import Settings
from agent.sqlite import open_engine
from agent.storage import queries

EXIT_DOWN = 1
EXIT_UNHEALTHY = 3


def _disk_mb(data_dir: Path) -> float:
    total = 0
    for path in data_dir.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue  # a file removed while we looked
    return round(total / 1e6, 1)


def collect(settings: Settings) -> tuple[dict[str, Any], int]:
    """The status document and the exit code it implies."""
    db = settings.storage.database_path
    engine = open_engine(db, create=False)
    try:
        beat = queries.latest_heartbeat(engine, settings.identity.agent)
        states = Counter(queries.asset_states(engine, settings.identity.site).values())
        backlog = queries.outbox_backlog(engine)
        with engine.connect() as conn:
            quarantined, newest = outbox.quarantined(conn, QUARANTINE_LISTED)
    finally:
        engine.dispose()
    now_ms = time.time_ns() // 1_000_000
    stale_ms = queries.heartbeat_max_age_ms(settings)
    health: dict[str, Any] = beat["health"] if beat else {}
    running = beat is not None and now_ms - beat["ts_ms"] <= stale_ms
    problems = []
    if not running:
        problems.append("no recent heartbeat: the agent is not running")
    elif not health.get("broker_connected", False):
        problems.append("not connected to the MQTT broker")
    disk_mb = _disk_mb(settings.storage.data_dir)
    if disk_mb > settings.storage.disk_budget_mb:
        budget = settings.storage.disk_budget_mb
        problems.append(f"data directory uses {disk_mb} MB, over the {budget} MB budget")
    uptime = max(float(health.get("uptime_s", 0.0)), 1e-9)
    doc = {
        "agent": settings.identity.agent,
        "running": running,
        "healthy": not problems,
        "problems": problems,
        "last_heartbeat_age_s": None if beat is None else round((now_ms - beat["ts_ms"]) / 1000, 1),
        "pid": beat["pid"] if beat else None,
        "version": beat["version"] if beat else None,
        "model_version": health.get("model_version"),
        "broker_connected": bool(health.get("broker_connected", False)),
        # Over the last health interval; the average since start hides a stalled stream.
        "messages_per_s": health.get("messages_per_s"),
        "messages_per_s_avg": round(health.get("messages_received", 0) / uptime, 1),
        "queue_depths": health.get("queue_depths", {}),
        "dead_letters": health.get("dead_letters_total", 0),
        "windows_shed": health.get("windows_shed", 0),
        "assets": dict(states),
        "sync_backlog": backlog,
        # Items the target refused for good: they wait for an operator, not for the link.
        "sync_quarantined": quarantined,
        "sync_quarantined_newest": newest,
        "disk_mb": disk_mb,
        "disk_budget_mb": settings.storage.disk_budget_mb,
        "database": str(db),
    }
    code = 0 if not problems else EXIT_DOWN if not running else EXIT_UNHEALTHY
    return doc, code


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Is the agent running and healthy? Exit 0 yes, 1 not running, 3 running but unhealthy."""
    doc, code = collect(invocation(ctx).settings())
    if as_json:
        emit_json(doc)
    else:
        state = "running" if doc["running"] else "NOT RUNNING"
        if doc["running"] and not doc["healthy"]:
            state = "running, UNHEALTHY"
        table = Table(show_header=False, title=f"edgewatch agent {doc['agent']}: {state}")
        for key in (
            "problems",
            "last_heartbeat_age_s",
            "pid",
            "version",
            "model_version",
            "broker_connected",
            "messages_per_s",
            "messages_per_s_avg",
            "queue_depths",
            "dead_letters",
            "windows_shed",
            "assets",
            "sync_backlog",
            "sync_quarantined",
            "disk_mb",
            "disk_budget_mb",
            "database",
        ):
            # The heartbeat is a document the agent wrote from what it received.
            table.add_row(key.replace("_", " "), printable(str(doc[key])))
        console.print(table)
        if doc["sync_quarantined"]:
            print_quarantined(doc["sync_quarantined"], doc["sync_quarantined_newest"])
    raise typer.Exit(code)
