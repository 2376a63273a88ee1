"""Sparkplug B ingest: the agent as a host application of one Sparkplug group.

An edge node's NBIRTH, and each of its devices' DBIRTH, name the metrics (and their
aliases, data types and current values); NDATA/DDATA then carry changed values,
usually by alias only. Each data message becomes readings of one asset (the device,
or the node itself, named by the ``[sparkplug]`` templates) whose sensors are the
metric names: a reading holds the current value of every numeric metric, so data
reported by exception still makes complete rows.

What the specification asks of a host application, and what is done here:

- data of a node or device without a birth, or with an alias its birth did not
  define, cannot be read: a ``no_birth`` dead letter and a Rebirth request (NCMD
  ``Node Control/Rebirth``);
- a sequence number that is not one more than the previous one means lost (Sparkplug
  data is QoS 0) or reordered messages: the message is still read, the gap counted,
  a Rebirth requested and an event recorded;
- NDEATH (with the birth's ``bdSeq``) and DDEATH put the assets offline (an event).

Rebirth requests to one node are at most one per ``rebirth_interval_s`` while its
births are awaited, so a node that cannot answer is not flooded.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from agent import sparkplug as sp
from agent.domain import Event, Inbound, Reading, RejectReason, clip_detail, name_problem
from agent.errors import PayloadError
from agent.logs import fields
from agent.metrics import Metrics
from agent.profiles import Profiles
from agent.settings import SparkplugSettings

from .decode import DecodeLimits
from .link import RawMessage
from .subscriber import MessageSource, Subscriber
from .topics import TopicMatcher

log = logging.getLogger(__name__)

subscription = sp.subscription

#: Nodes whose births are awaited are forgotten past this many nodes held: a flood
#: of bogus node ids must not grow memory without bound.
MAX_NODES: Final = 10_000
#: Events and Rebirth requests waiting to be recorded or published; past it they
#: are dropped (and counted), never the ingest of data.
EFFECTS_MAX: Final = 1024
#: Bound on publishing one Rebirth request (waiting for a connection included).
REBIRTH_PUBLISH_TIMEOUT_S: Final = 2.0
_MS_PER_S: Final = 1000
_DETAIL_TOPIC_CHARS: Final = 200
_IGNORED_KINDS: Final = frozenset({sp.MessageType.NCMD, sp.MessageType.DCMD, sp.MessageType.STATE})


@dataclass(frozen=True, slots=True)
class Rebirth:
    """A Rebirth request to publish."""

    node: str
    topic: str


Effect = Rebirth | Event


@dataclass(slots=True)
class _Metrics:
    """What one birth defined: metric names by alias, data types, current values."""

    asset: str
    #: Why ``asset`` is no usable asset name (its data is then dead-lettered).
    problem: str | None
    names: dict[int, str] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    #: Metric name -> sensor name (a profile's rename applied).
    sensors: dict[str, str] = field(default_factory=dict)
    #: Sensor name -> current value.
    values: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Node:
    born: bool = False
    bdseq: int | None = None
    seq: int = 0
    own: _Metrics | None = None
    devices: dict[str, _Metrics] = field(default_factory=dict)
    #: When a Rebirth was last requested (epoch ms), until the NBIRTH comes.
    asked_ms: int | None = None


@dataclass
class SparkplugCounts:
    """Sequence gaps and Rebirth requests since start."""

    seq_gaps: int = 0
    #: Messages the gaps say were lost (a reordered message counts as a long gap).
    messages_missed: int = 0
    rebirths_requested: int = 0
    #: Rebirths not requested again because one was requested less than
    #: ``rebirth_interval_s`` ago.
    rebirths_held_back: int = 0
    effects_dropped: int = 0


class SparkplugDecoder:
    """Stateful decoding of one group's messages: births, aliases, sequence numbers.

    ``decode`` returns the readings of one message or raises :class:`PayloadError`;
    what the message calls for besides (Rebirth requests, events) is appended to
    ``effects`` for the caller to carry out.
    """

    def __init__(
        self,
        settings: SparkplugSettings,
        site: str,
        limits: DecodeLimits,
        renames: Callable[[str], Mapping[str, str] | None] | None = None,
    ) -> None:
        self._settings = settings
        self._group = settings.group_id
        self._site = site
        self._limits = limits
        self._renames = renames
        self._interval_ms = round(settings.rebirth_interval_s * _MS_PER_S)
        self._nodes: dict[str, _Node] = {}
        # The agent's own Sparkplug out comes back on the group's subscription.
        self._own_node = settings.edge_node_id if settings.publish else None
        self.effects: list[Effect] = []
        self.counts = SparkplugCounts()
        #: The asset of the message being decoded, once known (for dead letters).
        self.asset: str | None = None

    def decode(self, topic: str, payload: bytes, now_ms: int) -> tuple[Reading, ...]:
        self.asset = None
        limits = self._limits
        if len(payload) > limits.max_payload_bytes:
            raise PayloadError(
                RejectReason.TOO_LARGE,
                f"{len(payload)} bytes > max_payload_bytes {limits.max_payload_bytes}",
            )
        try:
            where = sp.parse_topic(topic)
        except sp.TopicError as exc:
            raise _unknown(topic, str(exc)) from None
        if where.group != self._group:
            raise _unknown(topic, f"group {where.group[:64]!r} is not ours ({self._group!r})")
        kind = where.kind
        if kind in _IGNORED_KINDS or where.node == self._own_node:
            return ()  # commands to nodes (ours too) and host state: not data
        try:
            message = sp.decode(payload)
        except ValueError as exc:
            raise PayloadError(RejectReason.INVALID_PROTOBUF, clip_detail(str(exc))) from None
        node_id = where.node
        if kind is sp.MessageType.NBIRTH:
            self._node_birth(node_id, message, now_ms)
            return ()
        node = self._nodes.get(node_id)
        if kind is sp.MessageType.NDEATH:
            self._node_death(node_id, node, message, now_ms)
            return ()
        if node is None or not node.born:
            self._ask_rebirth(node_id, node, now_ms, "data before the node's birth", {})
            raise PayloadError(
                RejectReason.NO_BIRTH, f"edge node {node_id[:64]!r} has not sent its NBIRTH"
            )
        self._check_seq(node_id, node, message, now_ms)
        device = where.device
        if kind is sp.MessageType.NDATA:
            assert node.own is not None
            return self._data(node_id, node, node.own, message, now_ms)
        assert device is not None
        if kind is sp.MessageType.DBIRTH:
            node.devices[device] = self._birth(
                message,
                self._settings.device_asset.format(group=self._group, node=node_id, device=device),
                control=False,
            )
            return ()
        metrics = node.devices.get(device)
        if kind is sp.MessageType.DDEATH:
            if metrics is not None:
                del node.devices[device]
                self._offline(metrics.asset, node_id, device, "DDEATH", now_ms)
            return ()
        if metrics is None:
            self._ask_rebirth(node_id, node, now_ms, f"data before the birth of {device!r}", {})
            raise PayloadError(
                RejectReason.NO_BIRTH, f"device {device[:64]!r} has not sent its DBIRTH"
            )
        return self._data(node_id, node, metrics, message, now_ms)

    # -- births and deaths -----------------------------------------------------------

    def _node_birth(self, node_id: str, message: sp.Payload, now_ms: int) -> None:
        if not message.HasField("seq"):
            raise PayloadError(RejectReason.SCHEMA, "NBIRTH has no seq")
        own = self._birth(
            message, self._settings.node_asset.format(group=self._group, node=node_id), control=True
        )
        previous = self._nodes.get(node_id)
        if previous is None and len(self._nodes) >= MAX_NODES:
            self._forget_unborn()
        self._nodes[node_id] = _Node(
            born=True, bdseq=sp.bdseq_of(message), seq=message.seq % sp.SEQ_MODULUS, own=own
        )
        self.effects.append(
            Event(
                now_ms,
                "sparkplug_node_online",
                f"Sparkplug edge node {node_id} born",
                detail={
                    "node": node_id,
                    "rebirth_requested": previous is not None and previous.asked_ms is not None,
                },
            )
        )

    def _node_death(
        self, node_id: str, node: _Node | None, message: sp.Payload, now_ms: int
    ) -> None:
        if node is None or not node.born:
            return
        bdseq = sp.bdseq_of(message)
        if bdseq is not None and node.bdseq is not None and bdseq != node.bdseq:
            return  # the Will of an earlier session, delivered after the new birth
        node.born = False
        node.asked_ms = None
        self.effects.append(
            Event(
                now_ms,
                "sparkplug_node_offline",
                f"Sparkplug edge node {node_id} died (NDEATH)",
                level="warning",
                detail={"node": node_id},
            )
        )
        if node.own is not None and node.own.values:
            self._offline(node.own.asset, node_id, None, "NDEATH", now_ms)
        for device, metrics in node.devices.items():
            self._offline(metrics.asset, node_id, device, "NDEATH", now_ms)
        node.devices.clear()

    def _offline(
        self, asset: str, node_id: str, device: str | None, cause: str, now_ms: int
    ) -> None:
        self.effects.append(
            Event(
                now_ms,
                "asset_offline",
                f"{asset}: offline ({cause} from Sparkplug edge node {node_id})",
                level="warning",
                asset=asset if name_problem(asset) is None else None,
                detail={"node": node_id, "device": device, "cause": cause},
            )
        )

    def _birth(self, message: sp.Payload, asset: str, *, control: bool) -> _Metrics:
        problem = name_problem(asset)
        out = _Metrics(asset, None if problem is None else f"asset name {asset[:64]!r} {problem}")
        rename = (self._renames(asset) if self._renames and problem is None else None) or {}
        for metric in message.metrics:
            name = metric.name
            if not name:
                raise PayloadError(RejectReason.SCHEMA, "a birth metric has no name")
            if control and (name == sp.BDSEQ_METRIC or name.startswith(sp.NODE_CONTROL_PREFIXES)):
                continue
            datatype = metric.datatype
            if metric.HasField("alias"):
                known = out.names.setdefault(metric.alias, name)
                if known != name:
                    raise PayloadError(
                        RejectReason.SCHEMA,
                        f"alias {metric.alias} names both {known[:64]!r} and {name[:64]!r}",
                    )
            out.types[name] = datatype
            if datatype not in sp.NUMERIC_TYPES:
                continue
            sensor = rename.get(name, name)
            out.sensors[name] = sensor
            value = sp.metric_value(metric, datatype)
            if value is not None and math.isfinite(value):
                out.values[sensor] = value
        if len(set(out.sensors.values())) != len(out.sensors):
            raise PayloadError(
                RejectReason.SCHEMA, "renamed sensors clash with sensors of the same name"
            )
        return out

    # -- data ------------------------------------------------------------------------

    def _check_seq(self, node_id: str, node: _Node, message: sp.Payload, now_ms: int) -> None:
        if not message.HasField("seq"):
            raise PayloadError(RejectReason.SCHEMA, "payload has no seq")
        seq = message.seq
        expected = (node.seq + 1) % sp.SEQ_MODULUS
        node.seq = seq % sp.SEQ_MODULUS
        if seq == expected:
            return
        missed = (seq - expected) % sp.SEQ_MODULUS
        counts = self.counts
        counts.seq_gaps += 1
        counts.messages_missed += missed
        self._ask_rebirth(
            node_id,
            node,
            now_ms,
            f"sequence gap: seq {seq} where {expected} was due",
            {"expected": expected, "seq": seq, "missed": missed},
        )

    def _data(
        self, node_id: str, node: _Node, metrics: _Metrics, message: sp.Payload, now_ms: int
    ) -> tuple[Reading, ...]:
        self.asset = metrics.asset if metrics.problem is None else None
        if metrics.problem is not None:
            raise PayloadError(RejectReason.BAD_ASSET_NAME, metrics.problem)
        # Unset proto2 fields read as 0 or "": no HasField per metric (a tenth of the
        # time per reading). A time of 0 (1970) or an alias of 0 without a name then
        # count as absent, which a birth-defined alias 0 alone would not want.
        default_ts = message.timestamp or None
        names, types, sensors = metrics.names, metrics.types, metrics.sensors
        updates: dict[int, dict[str, float | None]] = {}
        for metric in message.metrics:
            name = metric.name or names.get(metric.alias)
            if name is None:
                self._ask_rebirth(node_id, node, now_ms, "an alias its birth did not define", {})
                raise PayloadError(
                    RejectReason.NO_BIRTH,
                    f"alias {metric.alias} is not in the birth of {metrics.asset[:64]!r}",
                )
            sensor = sensors.get(name)
            if sensor is None:
                if (
                    name in types
                    or name == sp.BDSEQ_METRIC
                    or name.startswith(sp.NODE_CONTROL_PREFIXES)
                ):
                    continue  # not numeric, or the node's own controls
                self._ask_rebirth(node_id, node, now_ms, "a metric its birth did not define", {})
                raise PayloadError(
                    RejectReason.NO_BIRTH,
                    f"metric {name[:64]!r} is not in the birth of {metrics.asset[:64]!r}",
                )
            # The birth's data type: a data message may leave it out.
            datatype = types[name]
            if datatype == sp.DOUBLE and not metric.is_null:
                value: float | None = metric.double_value
            else:
                value = sp.metric_value(metric, datatype)
            if value is not None and not math.isfinite(value):
                raise PayloadError(RejectReason.NON_FINITE, f"{name[:64]!r} is {value}")
            ts = metric.timestamp or default_ts
            if ts is None:
                raise PayloadError(
                    RejectReason.SCHEMA, f"{name[:64]!r} has no timestamp, nor has the payload"
                )
            stamp = updates.get(ts)
            if stamp is None:
                updates[ts] = {sensor: value}
            else:
                stamp[sensor] = value
        if not updates:
            return ()
        self._check_times(min(updates), max(updates), now_ms)
        current = metrics.values
        readings = []
        site, asset = self._site, metrics.asset
        for ts in sorted(updates):
            for sensor, value in updates[ts].items():
                if value is None:
                    current.pop(sensor, None)
                else:
                    current[sensor] = value
            if current:
                readings.append(Reading(site, asset, ts, dict(current)))
        return tuple(readings)

    def _check_times(self, first_ms: int, last_ms: int, now_ms: int) -> None:
        limits = self._limits
        if last_ms > now_ms + limits.max_future_ms:
            raise PayloadError(
                RejectReason.TS_FUTURE, f"timestamp is {last_ms - now_ms} ms ahead of the clock"
            )
        if first_ms < now_ms - limits.max_past_ms:
            raise PayloadError(
                RejectReason.TS_PAST, f"timestamp is {now_ms - first_ms} ms behind the clock"
            )

    # -- Rebirth ---------------------------------------------------------------------

    def _ask_rebirth(
        self, node_id: str, node: _Node | None, now_ms: int, why: str, detail: dict[str, object]
    ) -> None:
        counts = self.counts
        if node is None:
            if len(self._nodes) >= MAX_NODES:
                self._forget_unborn()
            node = self._nodes[node_id] = _Node()
        if node.asked_ms is not None and now_ms - node.asked_ms < self._interval_ms:
            counts.rebirths_held_back += 1
            return
        node.asked_ms = now_ms
        counts.rebirths_requested += 1
        command = sp.topic(self._group, sp.MessageType.NCMD, node_id)
        self.effects.append(Rebirth(node_id, command))
        self.effects.append(
            Event(
                now_ms,
                "sparkplug_rebirth_requested",
                f"Sparkplug edge node {node_id}: {why}; Rebirth requested",
                level="warning",
                detail={
                    "node": node_id,
                    "seq_gaps": counts.seq_gaps,
                    "messages_missed": counts.messages_missed,
                    **detail,
                },
            )
        )

    def _forget_unborn(self) -> None:
        for node_id in [n for n, node in self._nodes.items() if not node.born]:
            del self._nodes[node_id]


def _unknown(topic: str, why: str) -> PayloadError:
    return PayloadError(RejectReason.UNKNOWN_TOPIC, f"{topic[:_DETAIL_TOPIC_CHARS]!r} {why}")


class SparkplugSubscriber(Subscriber):
    """The ingest stage for Sparkplug B: the JSON subscriber's flow control, acks and
    dead letters, with :class:`SparkplugDecoder` in place of the JSON decoder.

    Rebirth requests and events are queued for :meth:`run_effects`, so that handling
    a message never waits on the broker or the recorder.
    """

    def __init__(
        self,
        link: MessageSource,
        matcher: TopicMatcher,
        limits: DecodeLimits,
        out: asyncio.Queue[Inbound],
        metrics: Metrics,
        dead_letter_max_bytes: int,
        settings: SparkplugSettings,
        profiles: Profiles | None = None,
    ) -> None:
        super().__init__(link, matcher, limits, out, metrics, dead_letter_max_bytes, profiles)
        self.decoder = SparkplugDecoder(
            settings,
            matcher.site,
            limits,
            renames=None if profiles is None else profiles.renames,
        )
        self._effects: asyncio.Queue[Effect] = asyncio.Queue(EFFECTS_MAX)

    def handle(self, message: RawMessage) -> Inbound:
        metrics = self._metrics
        metrics.messages_received += 1
        decoder = self.decoder
        try:
            readings = decoder.decode(message.topic, message.payload, message.received_ms)
        except PayloadError as exc:
            return self._reject(message, exc, decoder.asset)
        except Exception as exc:  # no input may stop ingest
            self._log_decoder_failure(message)
            return self._reject(
                message,
                PayloadError(RejectReason.SCHEMA, f"decoder error: {exc!r}"),
                decoder.asset,
            )
        finally:
            if decoder.effects:
                self._queue_effects(decoder.effects)
                decoder.effects = []
        return Inbound(
            message.ref,
            message.received_ms,
            readings=readings,
            topic=message.topic,
            payload=message.payload,
        )

    def _queue_effects(self, effects: list[Effect]) -> None:
        for effect in effects:
            try:
                self._effects.put_nowait(effect)
            except asyncio.QueueFull:
                self.decoder.counts.effects_dropped += 1

    async def run_effects(
        self,
        publish: Callable[[str, bytes], Awaitable[bool]],
        record: Callable[[Event], Awaitable[None]],
    ) -> None:
        """Publish Rebirth requests and record events, until cancelled."""
        while True:
            effect = await self._effects.get()
            if isinstance(effect, Event):
                await record(effect)
                continue
            sent = await publish(effect.topic, sp.rebirth_command(time.time_ns() // 1_000_000))
            log.warning(
                "sparkplug rebirth requested" if sent else "sparkplug rebirth request not sent",
                extra=fields(node=effect.node, topic=effect.topic, **vars(self.decoder.counts)),
            )
