"""`edgewatch demo --protocol opcua`: the demo's fleet is an OPC UA server (Basic256Sha256
SignAndEncrypt), the agent reads it and scores every pump; nothing is dead-lettered."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.cli.demo_cmd import render
from agent.demo import DemoOptions, DemoView, run_demo
from agent.settings import load_settings
from tests.e2e.harness import query, scalar

WAIT_S = 120.0


async def test_the_opcua_demo_reads_the_fleet_and_scores_it(tmp_path: Path) -> None:
    base = load_settings(
        overrides={
            "identity": {"site": "demo", "agent": "demo-gw"},
            "storage": {"data_dir": str(tmp_path / "data"), "commit_interval_ms": 100},
            "model": {"commission_samples": 150, "commission_cpu_budget_s": 5.0},
            "sync": {"enabled": False},
        }
    )
    options = DemoOptions(assets=2, compressors=0, duration_s=90, protocol="opcua")
    stop = asyncio.Event()
    views: list[DemoView] = []

    def on_view(view: DemoView) -> None:
        views.append(view)
        scored = [row for row in view.assets if row["anomaly_score"] is not None]
        if len(scored) == 2:
            stop.set()

    async with asyncio.timeout(WAIT_S):
        result = await run_demo(base, options, on_view, stop)
    assert stop.is_set(), "the pumps were not scored"
    assert result.health["dead_letters_total"] == 0
    db = result.database
    readings = int(scalar(db, "select coalesce(sum(count), 0) from reading_blocks") or 0)
    assert readings >= 2 * 150
    # The fleet's server listens before the agent starts: connected at the first attempt.
    kinds = [kind for (kind,) in query(db, "select kind from events where kind like 'opcua%'")]
    assert kinds == ["opcua_connected"]
    caption = str(render(views[-1]).caption)
    assert f"OPC UA: fleet at {views[-1].opcua} (SignAndEncrypt)" in caption
