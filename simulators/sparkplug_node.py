"""The simulated fleet as one Sparkplug B edge node: births, DDATA by alias, Rebirth answered.

Every simulated asset is a device of the node ``node`` in group ``group``. The node
publishes NBIRTH (seq 0, its bdSeq, the ``Node Control/Rebirth`` metric) before
anything else, a device's DBIRTH (metric names, aliases, current values) before its
first data, and then one DDATA per stream message with the samples' metrics by alias
and each sample's timestamp; ``seq`` counts every message of the node 0..255 and wraps.
An NCMD ``Node Control/Rebirth`` makes it publish NBIRTH and every DBIRTH again; its
MQTT Last Will, and its goodbye when the run ends, is the NDEATH with the same bdSeq.
Sparkplug publishes at QoS 0, as the specification asks.

Python API::

    report = publish_fleet_sparkplug(FleetConfig(...), host="127.0.0.1", port=1883,
                                     group="plant", node="sim-node", pacing=Pacing(60))
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from agent import sparkplug as sp
from simulators.fleet import FleetConfig, stream_fleet
from simulators.paho_publisher import PahoPublisher
from simulators.payloads import decode_samples
from simulators.publisher import DEFAULT_MAX_INFLIGHT, DEFAULT_RECONNECT_TIMEOUT_S, MessageSink
from simulators.stream import Pacing, ProgressCallback, RunReport, TruthTable, finish_run

DEFAULT_NODE = "sim-node"
#: The stream's topic is the asset's name alone: the sink makes the Sparkplug topics.
ASSET_TOPIC = "{asset}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SparkplugNodeSink:
    """A :class:`~simulators.publisher.MessageSink` that re-encodes the stream's JSON
    messages (topic: the asset's name) as one edge node's Sparkplug B messages."""

    def __init__(
        self,
        inner: MessageSink,
        group: str,
        node: str = DEFAULT_NODE,
        *,
        bdseq: int = 0,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._inner = inner
        self.group = group
        self.node = node
        self.bdseq = bdseq
        self._clock_ms = clock_ms
        self._seq = 0
        self._born = False
        self._rebirth_asked = False
        self._next_alias = 1
        #: Device -> (alias by metric name, last values).
        self._devices: dict[str, tuple[dict[str, int], dict[str, float]]] = {}
        #: Rebirth requests answered.
        self.rebirths = 0

    @property
    def command_topic(self) -> str:
        return sp.topic(self.group, sp.MessageType.NCMD, self.node)

    def will(self) -> tuple[str, bytes]:
        """The NDEATH to register as the MQTT Last Will."""
        return (
            sp.topic(self.group, sp.MessageType.NDEATH, self.node),
            sp.death_payload(self._clock_ms(), self.bdseq),
        )

    def on_command(self, topic: str, payload: bytes) -> None:
        """An NCMD for the node: a Rebirth is answered before the next data."""
        if topic != self.command_topic:
            return
        try:
            command = sp.decode(payload)
        except ValueError:
            return  # a command the node cannot read is no command
        if sp.is_rebirth_command(command):
            self._rebirth_asked = True

    def _take_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % sp.SEQ_MODULUS
        return seq

    def _births(self, seq: int) -> bool:
        """NBIRTH (seq 0) and the DBIRTH of every device known so far."""
        self._seq = 0
        now = self._clock_ms()
        ok = self._inner.publish(
            seq,
            sp.topic(self.group, sp.MessageType.NBIRTH, self.node),
            sp.birth_payload(now, self._take_seq(), {}, {}, bdseq=self.bdseq),
            0,
        )
        for device, (aliases, values) in self._devices.items():
            ok = self._device_birth(seq, device, aliases, values, now) and ok
        self._born = ok
        return ok

    def _device_birth(
        self,
        seq: int,
        device: str,
        aliases: Mapping[str, int],
        values: Mapping[str, float],
        ts: int,
    ) -> bool:
        return self._inner.publish(
            seq,
            sp.topic(self.group, sp.MessageType.DBIRTH, self.node, device),
            sp.birth_payload(ts, self._take_seq(), values, aliases),
            0,
        )

    def answer_rebirth(self, seq: int = 0) -> bool:
        """Births again if a Rebirth was asked for; True if none was or they went out."""
        if not self._rebirth_asked:
            return True
        self._rebirth_asked = False
        self.rebirths += 1
        return self._births(seq)

    def publish(self, seq: int, topic: str, payload: bytes, readings: int = 1) -> bool:
        device = topic
        samples = decode_samples(payload)
        if not samples:
            return True
        if not self._born:
            self._rebirth_asked = False
            if not self._births(seq):
                return False
        elif not self.answer_rebirth(seq):
            return False
        known = self._devices.get(device)
        if known is None:
            names = samples[0][1]
            aliases = {name: self._next_alias + i for i, name in enumerate(names)}
            self._next_alias += len(aliases)
            known = self._devices[device] = (aliases, dict(names))
            if not self._device_birth(seq, device, aliases, names, samples[0][0]):
                return False
        aliases, last = known
        for _, values in samples:
            last.update(values)
        return self._inner.publish(
            seq,
            sp.topic(self.group, sp.MessageType.DDATA, self.node, device),
            sp.data_payload(self._take_seq(), samples, aliases),
            readings,
        )

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        stopped = self._inner.wait(seconds, stop)
        if self._born:
            self.answer_rebirth()
        return stopped

    @property
    def gave_up(self) -> bool:
        return bool(getattr(self._inner, "gave_up", False))

    def goodbye(self) -> bool:
        """The NDEATH a node publishes before it disconnects on purpose."""
        topic, payload = self.will()
        return self._inner.publish(0, topic, payload, 0)


def publish_fleet_sparkplug(
    config: FleetConfig,
    *,
    host: str,
    port: int,
    group: str,
    node: str = DEFAULT_NODE,
    pacing: Pacing | None = None,
    count: int | None = None,
    truth_path: str | Path | None = None,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    username: str | None = None,
    password: str | None = None,
    reconnect_timeout_s: float = DEFAULT_RECONNECT_TIMEOUT_S,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> RunReport:
    """Publish the simulated fleet as Sparkplug B edge node ``node`` of ``group``."""
    # A new bdSeq per run: the broker may still hold the Will of the previous one.
    bdseq = _now_ms() % sp.SEQ_MODULUS
    holder: list[SparkplugNodeSink] = []
    publisher = PahoPublisher(
        host,
        port,
        qos=0,
        max_inflight=max_inflight,
        client_id=f"edgewatch-sim-spb-{group}-{node}"[:64],
        username=username,
        password=password,
        reconnect_timeout_s=reconnect_timeout_s,
        will=(
            sp.topic(group, sp.MessageType.NDEATH, node),
            sp.death_payload(_now_ms(), bdseq),
        ),
        subscriptions=(sp.topic(group, sp.MessageType.NCMD, node),),
        on_message=lambda topic, payload: holder[0].on_command(topic, payload) if holder else None,
    )
    sink = SparkplugNodeSink(publisher, group, node, bdseq=bdseq)
    holder.append(sink)
    truth = TruthTable() if truth_path else None
    with publisher:
        stats = stream_fleet(
            config,
            sink,
            topic_template=ASSET_TOPIC,
            pacing=pacing,
            count=count,
            truth=truth,
            on_progress=on_progress,
            stop=stop,
        )
        sink.goodbye()
    return finish_run(
        stats, publisher.result, truth=truth, truth_path=truth_path, bad_record_path=None
    )
