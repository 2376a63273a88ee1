"""edgewatch as a Sparkplug B edge node: births, data by exception and its death.

Pure and synchronous, so that it is tested without a broker: the caller owns the MQTT
connection and sends what these methods return, in order. One device per asset; its
metrics are the asset's latest results. Aliases are unique across the node (Sparkplug
3.0) and stay the same for the node's life, so a Rebirth does not renumber them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from agent import sparkplug as sp
from agent import sparkplug_b_pb2 as pb

Value = float | bool | str
Message = tuple[str, bytes]

STRING: Final = pb.String


def _datatype(value: Value) -> int:
    # bool before float: a bool is an int, and an alert state must stay a Boolean.
    if isinstance(value, bool):
        return sp.BOOLEAN
    if isinstance(value, str):
        return STRING
    return sp.DOUBLE


def _set(metric: pb.Payload.Metric, value: Value | None) -> None:
    if value is None:
        metric.is_null = True
    elif isinstance(value, str):
        metric.datatype = STRING
        metric.string_value = value
    else:
        sp.set_value(metric, _datatype(value), value)


class EdgeNode:
    def __init__(self, group: str, node: str, *, bdseq: int = 0) -> None:
        self.group = group
        self.node = node
        self.bdseq = bdseq % sp.SEQ_MODULUS
        self._seq = 0
        self._aliases: dict[tuple[str, str], int] = {}
        self._values: dict[str, dict[str, Value | None]] = {}
        self._types: dict[tuple[str, str], int] = {}
        self._born: set[str] = set()
        self._node_born = False

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % sp.SEQ_MODULUS
        return seq

    def will(self, ts_ms: int) -> Message:
        """The NDEATH of the current session, to register as the connection's Will."""
        return sp.topic(self.group, sp.MessageType.NDEATH, self.node), sp.death_payload(
            ts_ms, self.bdseq
        )

    def new_session(self) -> None:
        """A new MQTT connection: the next births pair with a new Will."""
        self.bdseq = (self.bdseq + 1) % sp.SEQ_MODULUS
        self._born.clear()
        self._node_born = False

    def births(self, ts_ms: int) -> list[Message]:
        """NBIRTH (seq 0) and one DBIRTH per known asset with its current values."""
        self._seq = 0
        payload = pb.Payload(timestamp=ts_ms, seq=self._next_seq())
        sp.set_value(
            payload.metrics.add(name=sp.BDSEQ_METRIC, timestamp=ts_ms), sp.INT64, self.bdseq
        )
        sp.set_value(
            payload.metrics.add(name=sp.REBIRTH_METRIC, timestamp=ts_ms), sp.BOOLEAN, False
        )
        out = [
            (sp.topic(self.group, sp.MessageType.NBIRTH, self.node), payload.SerializeToString())
        ]
        self._born = set()
        self._node_born = True
        for asset in self._values:
            out.append(self._device_birth(asset, ts_ms))
        return out

    def _device_birth(self, asset: str, ts_ms: int) -> Message:
        payload = pb.Payload(timestamp=ts_ms, seq=self._next_seq())
        for name, value in self._values[asset].items():
            metric = payload.metrics.add(
                name=name, alias=self._aliases[asset, name], timestamp=ts_ms
            )
            metric.datatype = self._types[asset, name]
            _set(metric, value)
        self._born.add(asset)
        topic = sp.topic(self.group, sp.MessageType.DBIRTH, self.node, asset)
        return topic, payload.SerializeToString()

    def update(self, asset: str, values: Mapping[str, Value | None], ts_ms: int) -> list[Message]:
        """What to send for an asset's new values: nothing if none changed, its DBIRTH if
        it has a metric its birth did not declare (or was never born this session), else
        a DDATA of the changed metrics only, by alias. Before the node's NBIRTH of this
        session only the values are kept; the births will carry them."""
        current = self._values.setdefault(asset, {})
        changed: dict[str, Value | None] = {}
        rebirth = asset not in self._born
        for name, value in values.items():
            if name in current and current[name] == value:
                continue
            if (asset, name) not in self._aliases:
                self._aliases[asset, name] = len(self._aliases) + 1
                rebirth = True
            if value is not None:
                datatype = _datatype(value)
                if self._types.get((asset, name), datatype) != datatype:
                    rebirth = True
                self._types[asset, name] = datatype
            else:
                self._types.setdefault((asset, name), sp.DOUBLE)
            current[name] = value
            changed[name] = value
        if not changed and not rebirth:
            return []
        if not self._node_born:
            return []
        if rebirth:
            return [self._device_birth(asset, ts_ms)]
        payload = pb.Payload(timestamp=ts_ms, seq=self._next_seq())
        for name, value in changed.items():
            metric = payload.metrics.add(alias=self._aliases[asset, name], timestamp=ts_ms)
            metric.datatype = self._types[asset, name]
            _set(metric, value)
        topic = sp.topic(self.group, sp.MessageType.DDATA, self.node, asset)
        return [(topic, payload.SerializeToString())]
