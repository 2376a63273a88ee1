"""The agent on the ONNX Runtime backend: no torch in its process, children commission."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.e2e.fleet import make_fleet, publish
from tests.e2e.harness import AgentProcess, query, scalar, wait_until, write_config
from tests.support import Broker

SITE = "e2e"
COMMISSION = 150
WAIT_S = 120.0


def agent_on_onnx(tmp_path: Path, broker: Broker, **model: object) -> AgentProcess:
    config = write_config(
        tmp_path / "edgewatch.toml",
        tmp_path / "data",
        broker.port,
        model={"backend": "onnx", "commission_samples": COMMISSION, **model},
        # Its own MQTT session: the shared broker may still queue messages for the
        # persistent session of an agent another test stopped mid-stream.
        identity={"site": SITE, "agent": f"gw-onnx-{tmp_path.name}"},
    )
    return AgentProcess(config=config, cwd=tmp_path)


def health(db: Path) -> dict[str, object]:
    text = scalar(db, "select health_json from heartbeats")
    return dict(json.loads(text)) if text else {}


def commissioned(db: Path, n: int) -> bool:
    return (scalar(db, "select count(*) from assets where state != 'commissioning'") or 0) >= n


def test_onnx_agent_scores_without_torch(tmp_path: Path, mqtt_broker: Broker) -> None:
    fleet = make_fleet(2, COMMISSION + 80, fault_fraction=0.0, seed=5)
    agent = agent_on_onnx(tmp_path, mqtt_broker)
    db = tmp_path / "data" / "edgewatch.db"
    agent.start()
    try:
        head, tail = fleet.split(COMMISSION + 10)
        publish(mqtt_broker, head, site=SITE)
        wait_until(lambda: commissioned(db, 2), WAIT_S, "both assets commissioned")
        publish(mqtt_broker, tail, site=SITE)
        wait_until(
            lambda: (scalar(db, "select count(*) from predictions") or 0) >= 100,
            WAIT_S,
            "predictions",
        )
        wait_until(lambda: health(db).get("backend") == "onnx", WAIT_S, "a heartbeat")
        assert health(db)["torch_loaded"] is False
    finally:
        assert agent.stop() == 0, agent.log_text()[-3000:]
    for asset in ("pump-001", "pump-002"):
        assert (tmp_path / "data" / "baselines" / asset / "autoencoder.onnx").is_file()
    versions = {v for (v,) in query(db, "select distinct model_version from predictions")}
    assert len(versions) == 1 and next(iter(versions)).startswith("pump@")


def test_a_killed_commissioning_child_is_retried(tmp_path: Path, mqtt_broker: Broker) -> None:
    fleet = make_fleet(1, 3 * COMMISSION + 60, fault_fraction=0.0, seed=6)
    agent = agent_on_onnx(tmp_path, mqtt_broker, commission_cpu_budget_s=20.0)
    db = tmp_path / "data" / "edgewatch.db"
    agent.start()
    try:
        first, rest = fleet.split(COMMISSION + 5)
        publish(mqtt_broker, first, site=SITE)
        assert agent.process is not None
        parent = agent.process.pid
        # This agent's child only: other agents on the machine have children too.
        wait_until(lambda: bool(_children_of(parent)), WAIT_S, "a commissioning child")
        for pid in _children_of(parent):
            os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: bool(query(db, "select 1 from events where kind = 'commissioning_failed'")),
            WAIT_S,
            "the failure recorded",
        )
        assert agent.process is not None and agent.process.poll() is None  # still running
        assert not commissioned(db, 1)
        # The asset collects fresh samples and is commissioned by a new child.
        publish(mqtt_broker, rest, site=SITE)
        wait_until(lambda: commissioned(db, 1), WAIT_S, "commissioned on the retry")
    finally:
        assert agent.stop() == 0, agent.log_text()[-3000:]
    assert not (tmp_path / "data" / "baselines" / ".incoming").exists() or not any(
        (tmp_path / "data" / "baselines" / ".incoming").iterdir()
    )


def _children_of(parent: int) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(parent), "-f", "models.commission_child"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in found.stdout.split()]


def test_commissioning_children_are_bounded_and_die_with_the_agent(
    tmp_path: Path, mqtt_broker: Broker
) -> None:
    # Six new assets at once: one child at a time (model.max_commissioning = 1), and
    # when the agent is killed outright, the child it is waiting for goes with it at
    # once, seconds before its training would have ended.
    samples = 600
    fleet = make_fleet(6, samples + 5, fault_fraction=0.0, seed=8)
    agent = agent_on_onnx(
        tmp_path, mqtt_broker, commission_samples=samples, commission_cpu_budget_s=60.0
    )
    db = tmp_path / "data" / "edgewatch.db"
    agent.start()
    assert agent.process is not None
    parent = agent.process.pid
    most = 0

    def first_done() -> bool:
        nonlocal most
        most = max(most, len(_children_of(parent)))
        return commissioned(db, 1)

    try:
        publish(mqtt_broker, fleet.chunks, site=SITE)
        wait_until(first_done, WAIT_S, "one of six assets commissioned")
        wait_until(lambda: bool(_children_of(parent)), WAIT_S, "the next commissioning child")
        child = _children_of(parent)[0]
    finally:
        agent.kill()
    assert most == 1
    wait_until(lambda: not _alive(child), 3.0, "the child to die with its agent")


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper (a container's init may never reap it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
