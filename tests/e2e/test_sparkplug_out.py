"""Sparkplug B out end to end: the simulator in Sparkplug mode -> Mosquitto -> `edgewatch
run` with ingest and publish -> a subscriber on the group sees the agent as an edge node:
births, DDATA of scores, a Rebirth answered, and its NDEATH Will when it is SIGKILLed."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from subprocess import CompletedProcess

from agent import sparkplug as sp
from tests.conftest import CliRunner
from tests.e2e.harness import AgentProcess, scalar, wait_until, write_config
from tests.e2e.test_sparkplug import Watcher
from tests.support import Broker

ASSETS = 2
NODE = "ew-node"


def _payloads(watcher: Watcher, topic: str) -> list[sp.Payload]:
    return [sp.decode(p) for t, p in list(watcher.messages) if t == topic]


def _ddata_names(watcher: Watcher, group: str) -> set[str]:
    """Metric names in the agent's DDATA, resolved through its DBIRTH aliases."""
    names: dict[int, str] = {}
    seen: set[str] = set()
    for t, raw in list(watcher.messages):
        where = sp.parse_topic(t)
        if where.node != NODE:
            continue
        payload = sp.decode(raw)
        if where.kind is sp.MessageType.DBIRTH:
            names.update({m.alias: m.name for m in payload.metrics})
        elif where.kind is sp.MessageType.DDATA:
            seen.update(names[m.alias] for m in payload.metrics if m.alias in names)
    return seen


def test_the_agent_publishes_its_results_as_a_sparkplug_edge_node(
    tmp_path: Path, mqtt_broker: Broker, cli: CliRunner
) -> None:
    group = f"out-{uuid.uuid4().hex[:8]}"
    config = write_config(
        tmp_path / "edgewatch.toml",
        tmp_path / "data",
        mqtt_broker.port,
        sparkplug={"enabled": True, "group_id": group, "publish": True, "edge_node_id": NODE},
    )
    db = tmp_path / "data" / "edgewatch.db"
    agent = AgentProcess(config=config, cwd=tmp_path)
    watcher = Watcher(mqtt_broker, group)
    nbirth = sp.topic(group, sp.MessageType.NBIRTH, NODE)
    ndeath = sp.topic(group, sp.MessageType.NDEATH, NODE)
    results: list[CompletedProcess[str]] = []
    try:
        agent.start()
        wait_until(lambda: watcher.count(nbirth) == 1, 30, "the agent's NBIRTH")
        # 600 samples a pump, 15 s at 2400x: the pumps commission from their first 150
        # (about 4 s of training) and are scored while the rest still arrive. With 300
        # the run could end before the first score, and then the agent's first message
        # for a pump is its DBIRTH (carrying the score) and no DDATA follows.
        simulator = threading.Thread(
            target=lambda: results.append(
                cli(
                    "simulate", "fleet", "--protocol", "sparkplug", "--group", group,
                    "--broker", f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}",
                    "--assets", str(ASSETS), "--rate-hz", str(1 / 60), "--duration", "600m",
                    "--speedup", "2400", "--fault-fraction", "0",
                    "--sensor-fault-fraction", "0", "--json",
                )
            )
        )  # fmt: skip
        simulator.start()
        dbirths = [
            sp.topic(group, sp.MessageType.DBIRTH, NODE, f"pump-00{i + 1}") for i in range(ASSETS)
        ]
        wait_until(lambda: all(watcher.count(t) >= 1 for t in dbirths), 120, "a DBIRTH per asset")
        wait_until(
            lambda: "anomaly_score" in _ddata_names(watcher, group), 120, "DDATA with scores"
        )
        birth = _payloads(watcher, dbirths[0])[0]
        assert {"anomaly_score", "anomaly_threshold", "is_anomaly"} <= {
            m.name for m in birth.metrics
        }
        watcher.publish(sp.topic(group, sp.MessageType.NCMD, NODE), sp.rebirth_command(0))
        wait_until(lambda: watcher.count(nbirth) == 2, 30, "the agent's rebirth")
        wait_until(lambda: all(watcher.count(t) >= 2 for t in dbirths), 30, "DBIRTHs again")
        simulator.join(timeout=120)
        (result,) = results
        assert result.returncode == 0, result.stderr
        # The agent reads its own node's messages on the group and must not take them as data.
        assert int(scalar(db, "select count(*) from dead_letters")) == 0
        bdseq = sp.bdseq_of(_payloads(watcher, nbirth)[-1])
        agent.kill()
        wait_until(lambda: watcher.count(ndeath) >= 1, 30, "the agent's NDEATH Will")
        assert sp.bdseq_of(_payloads(watcher, ndeath)[0]) == bdseq
    finally:
        watcher.close()
        if agent.process is not None and agent.process.poll() is None:
            agent.stop()
