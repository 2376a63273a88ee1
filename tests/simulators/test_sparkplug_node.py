"""The simulated Sparkplug B edge node, read back by the agent's own Sparkplug decoder."""

from __future__ import annotations

import threading

from agent import sparkplug as sp
from agent.domain import Reading
from agent.ingest.decode import DecodeLimits
from agent.ingest.sparkplug import SparkplugDecoder
from agent.settings import SparkplugSettings
from simulators.payloads import Chunk
from simulators.sparkplug_node import SparkplugNodeSink

NOW_MS = 1_790_000_000_000
GROUP = "plant"


class ListSink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, seq: int, topic: str, payload: bytes, readings: int = 1) -> bool:
        self.messages.append((topic, payload))
        return True

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        return False


def chunk(asset: str, i: int, batch: int = 1) -> Chunk:
    ts = [NOW_MS / 1000 + i * batch + k for k in range(batch)]
    return Chunk(
        asset,
        ts,
        {"temp_c": [float(i + k) for k in range(batch)], "flow_m3_h": [100.0] * batch},
        as_batch=batch > 1,
    )


def test_the_agent_reads_what_the_node_sends_across_seq_wraps_and_a_rebirth() -> None:
    inner = ListSink()
    node = SparkplugNodeSink(inner, GROUP, "sim", bdseq=5, clock_ms=lambda: NOW_MS)
    decoder = SparkplugDecoder(
        SparkplugSettings.model_validate({"group_id": GROUP}), "site", DecodeLimits()
    )
    readings: list[Reading] = []
    for i in range(300):
        c = chunk("pump-001" if i % 2 else "pump-002", i, batch=2 if i % 3 else 1)
        assert node.publish(i, c.asset, c.encode(), len(c))
        if i == 150:
            node.on_command(node.command_topic, sp.rebirth_command(NOW_MS))
    topics = [topic for topic, _ in inner.messages]
    assert topics[:2] == [f"spBv1.0/{GROUP}/NBIRTH/sim", f"spBv1.0/{GROUP}/DBIRTH/sim/pump-002"]
    assert topics.count(f"spBv1.0/{GROUP}/NBIRTH/sim") == 2
    for topic, payload in inner.messages:
        readings.extend(decoder.decode(topic, payload, NOW_MS + 600_000))
    assert decoder.counts.seq_gaps == 0
    assert node.rebirths == 1
    expected = sum(2 if i % 3 else 1 for i in range(300))
    assert len(readings) == expected
    assert readings[0].values == {"temp_c": 0.0, "flow_m3_h": 100.0}
    assert sp.bdseq_of(sp.decode(node.will()[1])) == 5
