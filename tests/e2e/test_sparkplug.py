"""Sparkplug B end to end: `edgewatch simulate fleet --protocol sparkplug` -> real Mosquitto
-> `edgewatch run` with [sparkplug] enabled -> readings, predictions, Rebirth requests."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from subprocess import CompletedProcess

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent import sparkplug as sp
from tests.conftest import CliRunner
from tests.e2e.harness import AgentProcess, query, scalar, wait_until, write_config
from tests.support import Broker

SAMPLES = 400
ASSETS = 2
DRAIN_S = 120.0


class Watcher:
    """Every message on the group's namespace, as the broker delivers it."""

    def __init__(self, broker: Broker, group: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(sp.subscription(group), qos=0)
        assert self._subscribed.wait(10), "no SUBACK from the broker"

    def _on_message(self, _c: object, _u: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def count(self, topic: str) -> int:
        with self._lock:
            return sum(1 for t, _ in self.messages if t == topic)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=0).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def readings(db: Path) -> int:
    return int(scalar(db, "select coalesce(sum(count), 0) from reading_blocks") or 0)


def events(db: Path, kind: str) -> list[tuple[str, str | None]]:
    return [
        (str(message), detail)
        for message, detail in query(
            db, "select message, detail_json from events where kind = ? order by id", kind
        )
    ]


def test_sparkplug_fleet_is_scored_and_a_sequence_gap_asks_for_rebirth(
    tmp_path: Path, mqtt_broker: Broker, cli: CliRunner
) -> None:
    group = f"e2e-{uuid.uuid4().hex[:8]}"
    config = write_config(
        tmp_path / "edgewatch.toml",
        tmp_path / "data",
        mqtt_broker.port,
        sparkplug={"enabled": True, "group_id": group, "rebirth_interval_s": 1.0},
    )
    db = tmp_path / "data" / "edgewatch.db"
    agent = AgentProcess(config=config, cwd=tmp_path)
    watcher = Watcher(mqtt_broker, group)
    node_birth = sp.topic(group, sp.MessageType.NBIRTH, "sim-node")
    results: list[CompletedProcess[str]] = []
    try:
        agent.start()
        simulator = threading.Thread(
            target=lambda: results.append(
                cli(
                    "simulate",
                    "fleet",
                    "--protocol",
                    "sparkplug",
                    "--group",
                    group,
                    "--broker",
                    f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}",
                    "--assets",
                    str(ASSETS),
                    "--rate-hz",
                    str(1 / 60),
                    "--duration",
                    f"{SAMPLES}m",
                    "--speedup",
                    "2400",
                    "--fault-fraction",
                    "0",
                    "--sensor-fault-fraction",
                    "0",
                    "--json",
                )
            )
        )
        simulator.start()
        # The simulated node answers a Rebirth request (here the test's) with its births.
        wait_until(lambda: watcher.count(node_birth) >= 1, 30, "the simulator's NBIRTH")
        watcher.publish(sp.topic(group, sp.MessageType.NCMD, "sim-node"), sp.rebirth_command(0))
        wait_until(lambda: watcher.count(node_birth) >= 2, 30, "the simulator's rebirth")
        simulator.join(timeout=120)
        (result,) = results
        assert result.returncode == 0, result.stderr

        sent = int(json.loads(result.stdout)["readings_sent"])
        assert sent >= ASSETS * SAMPLES
        wait_until(lambda: readings(db) >= sent, DRAIN_S, "every reading stored")
        assert readings(db) == sent
        assert int(scalar(db, "select count(*) from dead_letters")) == 0
        wait_until(
            lambda: (
                int(scalar(db, "select count(distinct asset_id) from predictions") or 0) == ASSETS
            ),
            DRAIN_S,
            "predictions for every simulated asset",
        )
        # The simulator says goodbye with its NDEATH: its devices go offline.
        wait_until(lambda: len(events(db, "asset_offline")) == ASSETS, 30, "assets offline")

        # A node of the test's own skips four messages: the agent asks it for a rebirth.
        command = sp.topic(group, sp.MessageType.NCMD, "gap-node")
        device = sp.topic(group, sp.MessageType.DDATA, "gap-node", "gap-dev")
        aliases = {"temp_c": 1}
        now_ms = int(scalar(db, "select max(ts_ms) from events"))
        watcher.publish(
            sp.topic(group, sp.MessageType.NBIRTH, "gap-node"),
            sp.birth_payload(now_ms, 0, {}, {}, bdseq=1),
        )
        watcher.publish(
            sp.topic(group, sp.MessageType.DBIRTH, "gap-node", "gap-dev"),
            sp.birth_payload(now_ms, 1, {"temp_c": 20.0}, aliases),
        )
        watcher.publish(device, sp.data_payload(2, [(now_ms + 1, {"temp_c": 21.0})], aliases))
        assert watcher.count(command) == 0
        watcher.publish(device, sp.data_payload(7, [(now_ms + 2, {"temp_c": 22.0})], aliases))
        wait_until(lambda: watcher.count(command) == 1, 30, "the agent's Rebirth NCMD")
        ((_, payload),) = [m for m in watcher.messages if m[0] == command]
        assert sp.is_rebirth_command(sp.decode(payload))
        wait_until(
            lambda: any("gap-node" in m for m, _ in events(db, "sparkplug_rebirth_requested")),
            30,
            "the rebirth event",
        )
        ((message, detail),) = events(db, "sparkplug_rebirth_requested")
        assert "sequence gap" in message
        assert detail is not None
        assert json.loads(detail)["missed"] == 4
        # Data across a gap is still read: it was whole, only messages before it were lost.
        wait_until(lambda: readings(db) == sent + 2, 30, "the gap node's readings")
        assert int(scalar(db, "select count(*) from dead_letters")) == 0
    finally:
        watcher.close()
        if agent.process is not None:
            agent.stop()
