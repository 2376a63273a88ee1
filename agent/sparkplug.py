"""Sparkplug B: topics, payload encoding and metric values, shared by ingest and the simulator.

Pure and stateless: the protobuf classes are generated from Eclipse Tahu's
``sparkplug_b.proto`` (:mod:`agent.sparkplug_b_pb2`); what a host application keeps
per edge node (births, aliases, sequence numbers) lives in :mod:`agent.ingest.sparkplug`.

Topics are ``spBv1.0/<group>/<type>/<edge node>[/<device>]``. Every message of a node
but NDEATH carries ``seq``, 0..255 and wrapping, one more than the node's previous
message; NBIRTH and NDEATH carry the ``bdSeq`` metric that pairs them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError

from agent import sparkplug_b_pb2 as pb

NAMESPACE: Final = "spBv1.0"
SEQ_MODULUS: Final = 256
REBIRTH_METRIC: Final = "Node Control/Rebirth"
BDSEQ_METRIC: Final = "bdSeq"
#: Node metrics that describe the node itself, never a sensor.
NODE_CONTROL_PREFIXES: Final = ("Node Control/", "Node Info/", "Properties/")

Payload = pb.Payload
Metric = pb.Payload.Metric

# Data types (DataType in the proto) whose values are numbers a sensor can carry.
INT8: Final = pb.Int8
INT16: Final = pb.Int16
INT32: Final = pb.Int32
INT64: Final = pb.Int64
UINT8: Final = pb.UInt8
UINT16: Final = pb.UInt16
UINT32: Final = pb.UInt32
UINT64: Final = pb.UInt64
FLOAT: Final = pb.Float
DOUBLE: Final = pb.Double
BOOLEAN: Final = pb.Boolean
_SIGNED_32: Final = frozenset({INT8, INT16, INT32})
_UNSIGNED_32: Final = frozenset({UINT8, UINT16, UINT32})
NUMERIC_TYPES: Final = frozenset(
    {INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FLOAT, DOUBLE, BOOLEAN}
)
_2_31: Final = 1 << 31
_2_32: Final = 1 << 32
_2_63: Final = 1 << 63
_2_64: Final = 1 << 64


class MessageType(enum.StrEnum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"


_DEVICE_TYPES: Final = frozenset({MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA})
_TYPES: Final = {t.value: t for t in MessageType}


@dataclass(frozen=True, slots=True)
class Topic:
    group: str
    kind: MessageType
    node: str
    device: str | None = None

    def __str__(self) -> str:
        return topic(self.group, self.kind, self.node, self.device)


class TopicError(ValueError):
    """A topic under the namespace that is no Sparkplug B topic."""


def topic(group: str, kind: MessageType, node: str, device: str | None = None) -> str:
    base = f"{NAMESPACE}/{group}/{kind.value}/{node}"
    return base if device is None else f"{base}/{device}"


def subscription(group: str) -> str:
    """Everything of one group: births, deaths, data and commands of every node."""
    return f"{NAMESPACE}/{group}/#"


def parse_topic(text: str) -> Topic:
    """The parts of ``spBv1.0/group/TYPE/node[/device]``, or :class:`TopicError`."""
    parts = text.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE:
        raise TopicError("is not spBv1.0/<group>/<type>/<node>[/<device>]")
    kind = _TYPES.get(parts[2])
    if kind is None:
        raise TopicError(f"has an unknown message type {parts[2][:16]!r}")
    if not parts[1] or not parts[3]:
        raise TopicError("has an empty group or edge node id")
    device = parts[4] if len(parts) == 5 else None
    if (device is not None) != (kind in _DEVICE_TYPES) and kind is not MessageType.DCMD:
        raise TopicError(f"{kind.value} {'needs' if device is None else 'takes no'} device id")
    if device == "":
        raise TopicError("has an empty device id")
    return Topic(parts[1], kind, parts[3], device)


def decode(data: bytes) -> pb.Payload:
    """A payload from the wire, or ValueError naming what is wrong."""
    try:
        payload: pb.Payload = pb.Payload.FromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a Sparkplug B payload: {exc}") from None
    return payload


def _wire(payload: pb.Payload) -> bytes:
    data: bytes = payload.SerializeToString()
    return data


def metric_value(metric: pb.Payload.Metric, datatype: int) -> float | None:
    """A numeric metric's value as a float; None for null and non-numeric metrics.

    Signed integers travel as two's complement in the unsigned fields (Sparkplug 3.0).
    """
    if metric.is_null:
        return None
    if datatype == DOUBLE:
        return metric.double_value
    if datatype == FLOAT:
        return metric.float_value
    if datatype in _SIGNED_32:
        raw = metric.int_value
        return float(raw - _2_32 if raw >= _2_31 else raw)
    if datatype in _UNSIGNED_32:
        return float(metric.int_value)
    if datatype == INT64:
        raw = metric.long_value
        return float(raw - _2_64 if raw >= _2_63 else raw)
    if datatype == UINT64:
        return float(metric.long_value)
    if datatype == BOOLEAN:
        return 1.0 if metric.boolean_value else 0.0
    return None


def set_value(metric: pb.Payload.Metric, datatype: int, value: float | bool) -> None:
    """Store a number in the field its data type uses (the inverse of metric_value)."""
    metric.datatype = datatype
    if datatype == DOUBLE:
        metric.double_value = float(value)
    elif datatype == FLOAT:
        metric.float_value = float(value)
    elif datatype == BOOLEAN:
        metric.boolean_value = bool(value)
    elif datatype in _SIGNED_32 or datatype in _UNSIGNED_32:
        metric.int_value = int(value) % _2_32
    elif datatype in (INT64, UINT64):
        metric.long_value = int(value) % _2_64
    else:
        raise ValueError(f"data type {datatype} is not numeric")


def bdseq_of(payload: pb.Payload) -> int | None:
    """The ``bdSeq`` metric of an NBIRTH or NDEATH, if it has one."""
    for metric in payload.metrics:
        if metric.name == BDSEQ_METRIC:
            value = metric_value(metric, metric.datatype or INT64)
            return None if value is None else int(value)
    return None


def birth_payload(
    ts_ms: int,
    seq: int,
    values: Mapping[str, float],
    aliases: Mapping[str, int],
    *,
    datatype: int = DOUBLE,
    bdseq: int | None = None,
) -> bytes:
    """An NBIRTH (with ``bdseq``: its bdSeq and the Rebirth control) or a DBIRTH."""
    payload = pb.Payload(timestamp=ts_ms, seq=seq)
    if bdseq is not None:
        control = payload.metrics.add(name=BDSEQ_METRIC, timestamp=ts_ms)
        set_value(control, INT64, bdseq)
        rebirth = payload.metrics.add(name=REBIRTH_METRIC, timestamp=ts_ms)
        set_value(rebirth, BOOLEAN, False)
    for name, value in values.items():
        metric = payload.metrics.add(name=name, alias=aliases[name], timestamp=ts_ms)
        set_value(metric, datatype, value)
    return _wire(payload)


def data_payload(
    seq: int,
    samples: Iterable[tuple[int, Mapping[str, float]]],
    aliases: Mapping[str, int],
    *,
    datatype: int = DOUBLE,
) -> bytes:
    """An NDATA/DDATA of one or more samples ``(ts_ms, {name: value})``, by alias."""
    payload = pb.Payload(seq=seq)
    last = 0
    for ts_ms, values in samples:
        last = ts_ms
        for name, value in values.items():
            metric = payload.metrics.add(alias=aliases[name], timestamp=ts_ms)
            set_value(metric, datatype, value)
    payload.timestamp = last
    return _wire(payload)


def death_payload(ts_ms: int, bdseq: int) -> bytes:
    """An NDEATH (the node's MQTT Will): no seq, its bdSeq."""
    payload = pb.Payload(timestamp=ts_ms)
    set_value(payload.metrics.add(name=BDSEQ_METRIC), INT64, bdseq)
    return _wire(payload)


def device_death_payload(ts_ms: int, seq: int) -> bytes:
    return _wire(pb.Payload(timestamp=ts_ms, seq=seq))


def rebirth_command(ts_ms: int) -> bytes:
    """The NCMD a host application sends to ask a node for all its births again."""
    payload = pb.Payload(timestamp=ts_ms)
    metric = payload.metrics.add(name=REBIRTH_METRIC, timestamp=ts_ms)
    set_value(metric, BOOLEAN, True)
    return _wire(payload)


def is_rebirth_command(payload: pb.Payload) -> bool:
    return any(m.name == REBIRTH_METRIC and m.boolean_value for m in payload.metrics)
