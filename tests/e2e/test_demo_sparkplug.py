"""`edgewatch demo --protocol sparkplug`: the demo's fleet publishes Sparkplug B, the agent
ingests it, and a Sparkplug subscriber on the demo's broker sees the agent's metrics
(births, scores, RUL) as an edge node of the same group."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from types import SimpleNamespace

from agent import sparkplug as sp
from agent.cli.demo_cmd import render
from agent.demo import DemoOptions, DemoView, run_demo
from agent.settings import load_settings
from tests.e2e.test_sparkplug import Watcher

AGENT_NODE = "demo-gw"
WAIT_S = 120.0


def _agent_metrics(watcher: Watcher) -> tuple[set[str], set[str]]:
    """Devices the agent gave a DBIRTH, and metric names in its DDATA (by alias)."""
    names: dict[tuple[str, int], str] = {}
    devices: set[str] = set()
    seen: set[str] = set()
    for topic, raw in list(watcher.messages):
        where = sp.parse_topic(topic)
        if where.node != AGENT_NODE or where.device is None:
            continue
        payload = sp.decode(raw)
        if where.kind is sp.MessageType.DBIRTH:
            devices.add(where.device)
            names.update({(where.device, m.alias): m.name for m in payload.metrics})
        elif where.kind is sp.MessageType.DDATA:
            seen.update(
                names[where.device, m.alias]
                for m in payload.metrics
                if (where.device, m.alias) in names
            )
    return devices, seen


async def test_the_sparkplug_demo_shows_the_agents_metrics_to_a_subscriber(
    tmp_path: Path,
) -> None:
    group = f"demo-{uuid.uuid4().hex[:8]}"
    base = load_settings(
        overrides={
            "identity": {"site": "demo", "agent": AGENT_NODE},
            "storage": {"data_dir": str(tmp_path / "data"), "commit_interval_ms": 100},
            "model": {"commission_samples": 150, "commission_cpu_budget_s": 5.0},
            "sync": {"enabled": False},
            "sparkplug": {"group_id": group},
        }
    )
    options = DemoOptions(
        assets=2, compressors=0, duration_s=90, protocol="sparkplug", broker="mosquitto"
    )
    stop = asyncio.Event()
    watchers: list[Watcher] = []
    views: list[DemoView] = []

    def on_view(view: DemoView) -> None:
        views.append(view)
        if not watchers:
            # The first view comes once the agent subscribed and the fleet started.
            watchers.append(Watcher(SimpleNamespace(host="127.0.0.1", port=view.port), group))  # type: ignore[arg-type]
        devices, metrics = _agent_metrics(watchers[0])
        if devices == {"pump-001", "pump-002"} and {"anomaly_score", "rul_cycles"} <= metrics:
            stop.set()

    try:
        async with asyncio.timeout(WAIT_S):
            result = await run_demo(base, options, on_view, stop)
    finally:
        for watcher in watchers:
            watcher.close()
    assert stop.is_set(), "the subscriber never saw the agent's scores"
    (watcher,) = watchers
    topics = {topic for topic, _ in watcher.messages}
    # The fleet is one Sparkplug edge node, the agent another (both NBIRTHs went out
    # before the subscriber came; the agent's DBIRTHs are checked above).
    assert sp.topic(group, sp.MessageType.DDATA, "sim-node", "pump-001") in topics
    # What the agent scored came in over Sparkplug B, and none of it was refused.
    assert result.health["messages_received"] > 0
    assert result.health["dead_letters_total"] == 0
    assert views[-1].sparkplug == {"group": group, "fleet": "sim-node", "agent": AGENT_NODE}
    caption = str(render(views[-1]).caption)
    assert f"spBv1.0/{group}/+/{AGENT_NODE}" in caption
    assert f"127.0.0.1:{views[-1].port}" in caption
