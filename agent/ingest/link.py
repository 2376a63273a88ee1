"""The agent's one connection to the MQTT broker, kept up for the life of the process.

:class:`MqttLink` owns the aiomqtt client: a persistent session under a stable client
id (the broker queues QoS 1 telemetry while the agent is away), QoS 1 subscription,
TLS and credentials, birth message and Last Will, reconnection with capped
exponential backoff and jitter. Each connection is a new *session number*; message
refs carry it so that acks never cross connections (message ids are per connection).

Usage::

    async with MqttLink(settings, metrics) as link:   # connects in the background
        async for message in link.messages():         # survives reconnects
            ...
            link.ack([message.ref])                    # after the commit
    # leaving the block publishes "offline" (retained) and disconnects cleanly

or ``run()`` as a task in the runtime's TaskGroup and ``close()`` at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import random
import ssl
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.client import ProtocolVersion
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

# The packet-size rule is re-exported from the foundation layer so that the demo
# broker (agent.localbroker) refuses exactly the packets the agent announces it refuses.
from agent.domain import PACKET_HEADROOM_BYTES as PACKET_HEADROOM_BYTES
from agent.domain import MessageRef
from agent.domain import max_packet_bytes as max_packet_bytes
from agent.errors import BrokerError
from agent.logs import fields
from agent.metrics import Metrics
from agent.settings import MqttSettings, Settings

from .acks import ManualAcks, SocketReads
from .publisher import StatusReporter
from .topics import TopicMatcher, format_topic

log = logging.getLogger(__name__)

#: First reconnect delay; doubles per failed attempt up to ``mqtt.reconnect_max_s``.
RECONNECT_BASE_S: Final = 0.25
#: Bound on TCP connect + CONNACK, subscribe and the birth message of one attempt.
CONNECT_TIMEOUT_S: Final = 10.0
#: A connection that lasts this long is stable: the backoff starts over after it.
STABLE_CONNECTION_S: Final = 10.0
#: Default bound on ``publish()``, waiting for a connection included.
PUBLISH_TIMEOUT_S: Final = 5.0
#: Default bound on ``close()``: the offline status plus a clean DISCONNECT.
CLOSE_TIMEOUT_S: Final = 3.0
#: "broker still down" is logged at these attempt counts (and every further decade).
_STILL_DOWN_EVERY: Final = 10
#: QoS 1 backlog is bounded by Receive Maximum; this headroom is for QoS 0 bursts.
_QOS0_HEADROOM: Final = 1000
_SHED_LOG_INTERVAL_S: Final = 60.0
# MQTT 5 CONNACK "Unsupported Protocol Version"; MQTT 3.1.1 return code 1 says the same.
_VERSION_REFUSED: Final = frozenset({0x84, 1})
_MS_PER_NS: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One delivery from the broker, before decoding. ``ref`` is None for QoS 0."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    ref: MessageRef | None
    received_ms: int


@dataclass(frozen=True, slots=True)
class _Connection:
    client: aiomqtt.Client
    session: int
    acks: ManualAcks
    protocol: ProtocolVersion


class _OncePerInterval(logging.Filter):
    """Lets a given aiomqtt/paho warning through once per interval.

    aiomqtt warns once per discarded message when its queue is full; under a QoS 0
    flood that would be a log line per message.
    """

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = str(record.msg)
        if now - self._last.get(key, -self._interval_s) < self._interval_s:
            return False
        if len(self._last) > 100:
            self._last.clear()
        self._last[key] = now
        return True


_client_log = logging.getLogger("agent.ingest.mqtt")
_client_log.addFilter(_OncePerInterval())


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: traffic that never leaves the machine."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def tls_context(mqtt: MqttSettings) -> ssl.SSLContext | None:
    """The TLS context from settings, or None without TLS; file problems are BrokerError."""
    if not mqtt.use_tls:
        return None
    try:
        context = ssl.create_default_context(
            cafile=str(mqtt.ca_file) if mqtt.ca_file is not None else None
        )
        if mqtt.cert_file is not None and mqtt.key_file is not None:
            context.load_cert_chain(str(mqtt.cert_file), str(mqtt.key_file))
    except OSError as exc:  # ssl.SSLError is an OSError
        raise BrokerError(
            f"cannot load the broker TLS files: {exc}",
            hint="check mqtt.ca_file, mqtt.cert_file and mqtt.key_file",
        ) from None
    return context


class MqttLink:
    """Keeps one broker connection up; receives, acknowledges and publishes through it.

    Never raises because the broker is away: connecting is retried forever, each
    state change logged once. ``messages()`` yields across reconnects; ``publish()``
    waits (bounded) for a connection; ``ack()`` drops refs of older connections.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        subscribe: bool = True,
        publish_timeout_s: float = PUBLISH_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        rng: random.Random | None = None,
        subscription: str | None = None,
    ) -> None:
        mqtt = settings.mqtt
        self._mqtt = mqtt
        self._metrics = metrics
        self._subscribe = subscribe
        self._publish_timeout_s = publish_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._rng = rng or random.Random()
        self.client_id = settings.mqtt_client_id
        self.matcher = TopicMatcher(mqtt.telemetry_topic, settings.identity.site)
        #: The topic filter subscribed to: the telemetry template's unless given
        #: (Sparkplug B ingest reads its group's namespace instead).
        self.subscription = subscription or self.matcher.subscription
        self.status = StatusReporter(
            site=settings.identity.site,
            agent=settings.identity.agent,
            client_id=self.client_id,
            topic=format_topic(
                mqtt.status_topic, site=settings.identity.site, agent=settings.identity.agent
            ),
        )
        self._tls = tls_context(mqtt)
        self._max_packet_bytes = max_packet_bytes(settings.ingest.max_payload_bytes)
        self._protocol: ProtocolVersion | None = {
            "5": ProtocolVersion.V5,
            "3.1.1": ProtocolVersion.V311,
            "auto": None,
        }[mqtt.protocol]
        self._auto_protocol = self._protocol is None
        # QoS 1 is never dropped on the way in: a dropped message stays unacknowledged,
        # holds one of the broker's in-flight slots until the next connection, and
        # enough of them stall delivery for good. Its volume is bounded by Receive
        # Maximum (every QoS 1 message stays unacknowledged until committed), except
        # that Mosquitto 2.0.11 overshoots it when acks come in small batches
        # (measured: 10x with one ack at a time), so that backlog is watched instead.
        # aiomqtt's own queue stays unbounded for the same reason (it would drop any
        # QoS alike); the pump keeps it empty. QoS 0 is shed past the bound.
        self._queue_max = mqtt.receive_maximum + _QOS0_HEADROOM
        self._incoming: asyncio.Queue[RawMessage | None] = asyncio.Queue()
        #: QoS 0 messages dropped because the incoming queue was full.
        self.shed = 0
        #: Largest QoS 1 backlog seen beyond Receive Maximum (broker overshoot).
        self.overrun_peak = 0
        self._logged_at: dict[str, float] = {}
        self._conn: _Connection | None = None
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._stopped = asyncio.Event()
        self._publish_offline = True
        self._session = 0
        self._reads: SocketReads | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._own_task: asyncio.Task[None] | None = None

    # -- state ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def session(self) -> int:
        """Number of the current (or last) connection; 0 before the first."""
        return self._session

    @property
    def protocol(self) -> str | None:
        conn = self._conn
        if conn is None:
            return None
        return "5" if conn.protocol is ProtocolVersion.V5 else "3.1.1"

    def _set_connection(self, conn: _Connection | None) -> None:
        self._conn = conn
        self._metrics.broker_connected = conn is not None
        # Wake everyone waiting for a change, then arm a fresh event for the next one.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait_change(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    async def wait_connected(self, timeout_s: float | None = None) -> bool:
        """True once connected; False after ``timeout_s`` or when the link is closing."""
        return await self.wait_for_state(connected=True, timeout_s=timeout_s)

    async def wait_for_state(self, *, connected: bool, timeout_s: float | None = None) -> bool:
        """Wait until the link is (dis)connected; False after ``timeout_s``.

        Waiting for a connection also ends (False) when the link is closing.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while (self._conn is not None) != connected:
            if connected and self._closing.is_set():
                return False
            if deadline is None:
                await self._changed.wait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await self._wait_change(remaining)
        return True

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._own_task = asyncio.create_task(self.run(), name="mqtt-link")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, publish_offline: bool = True, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Publish the retained "offline" status (if asked) and disconnect cleanly.

        A clean DISCONNECT makes the broker drop the Last Will. Bounded by
        ``timeout_s``: past it the connection is abandoned (the Will then says
        offline). Messages still in the link are not acknowledged, so the broker
        redelivers them to the next session.
        """
        self._publish_offline = publish_offline
        self._closing.set()
        self._set_connection(self._conn)  # wake publishers waiting for a connection
        task = self._run_task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(self._stopped.wait(), timeout_s)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._end_messages()

    def _end_messages(self) -> None:
        # Unprocessed messages are unacknowledged: the broker redelivers them.
        while not self._incoming.empty():
            self._incoming.get_nowait()
        self._incoming.put_nowait(None)

    async def run(self) -> None:
        """Connect, and reconnect, until :meth:`close`. Never raises for broker trouble."""
        self._run_task = asyncio.current_task()
        self._warn_plaintext_password()
        try:
            await self._connect_forever()
        finally:
            self._set_connection(None)
            self._stopped.set()

    def _warn_plaintext_password(self) -> None:
        mqtt = self._mqtt
        if mqtt.password is None or self._tls is not None or is_loopback(mqtt.host):
            return
        log.warning(
            "broker password sent without TLS",
            extra=fields(
                host=mqtt.host,
                port=mqtt.port,
                hint="anyone on the network path can read it: set mqtt.tls = true "
                "(and mqtt.ca_file for a private CA)",
            ),
        )

    async def _connect_forever(self) -> None:
        attempts = 0  # failed attempts since the last stable connection
        flaps = 0  # connections in a row the broker dropped before they were stable
        failures = 0  # connection attempts in a row that failed (for logging)
        down_since: float | None = None
        ever_connected = False
        connected_at = 0.0

        def now_stable() -> None:
            nonlocal attempts, flaps
            if flaps:
                log.info("broker connection stable again", extra=fields(after_flaps=flaps))
            attempts = flaps = 0

        while not self._closing.is_set():
            protocol = self._protocol or ProtocolVersion.V5
            session = self._session + 1
            client = self._make_client(protocol)
            acks = ManualAcks(client, session)
            connected = False
            try:
                async with client:
                    conn = _Connection(client, session, acks, protocol)
                    await self._start_session(conn)
                    connected = True
                    self._session = session
                    if self._auto_protocol and self._protocol is None:
                        self._protocol = protocol
                    self._metrics.broker_connects += 1
                    self._set_connection(conn)
                    connected_at = time.monotonic()
                    if flaps == 0:
                        log.info(
                            "broker connected" if not ever_connected else "broker reconnected",
                            extra=fields(
                                host=self._mqtt.host,
                                port=self._mqtt.port,
                                client_id=self.client_id,
                                protocol=self.protocol,
                                session=session,
                                attempts=failures + 1,
                                down_s=None
                                if down_since is None
                                else round(time.monotonic() - down_since, 1),
                            ),
                        )
                    ever_connected = True
                    failures = 0
                    down_since = None
                    await self._serve(conn, now_stable)
                    # Only close() ends _serve without an error: say goodbye first.
                    await self._say_offline(conn)
                return
            except (aiomqtt.MqttError, OSError) as exc:
                error = _describe(exc)
            except Exception as exc:  # a reconnect loop must outlive surprises
                log.exception("unexpected error in the broker link")
                error = _describe(exc)
            self._set_connection(None)
            if self._closing.is_set():
                return
            if connected:
                self._metrics.broker_disconnects += 1
                down_since = time.monotonic()
                lived_s = down_since - connected_at
                if lived_s >= STABLE_CONNECTION_S:
                    log.warning(
                        "broker connection lost", extra=fields(session=session, error=error)
                    )
                    continue  # reconnect at once; backoff starts with the next failure
                # Dropped right after connecting (another client with our id, an ACL,
                # a broker limit): back off like a failed attempt, and do not log
                # every round of what would otherwise be a tight loop.
                flaps += 1
                attempts += 1
                if _is_decade(flaps) or flaps == 1:
                    log.warning(
                        "broker connection lost soon after connecting",
                        extra=fields(
                            flaps=flaps,
                            lived_s=round(lived_s, 2),
                            error=error,
                            hint="repeated: another client with this client id, or an ACL?",
                        ),
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self._backoff_s(attempts))
                continue
            if self._should_fall_back(exc_protocol=protocol, error=error):
                continue
            attempts += 1
            if down_since is None:
                down_since = time.monotonic()
            delay = self._backoff_s(attempts)
            failures += 1
            if failures == 1:
                log.warning(
                    "broker unreachable, retrying",
                    extra=fields(
                        host=self._mqtt.host,
                        port=self._mqtt.port,
                        error=error,
                        retry_in_s=round(delay, 2),
                    ),
                )
            elif _is_decade(failures):
                log.warning(
                    "broker still down",
                    extra=fields(
                        attempts=failures,
                        down_s=round(time.monotonic() - down_since, 1),
                        error=error,
                    ),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    def _should_fall_back(self, *, exc_protocol: ProtocolVersion, error: str) -> bool:
        # Only in auto mode, only before MQTT 5 ever worked, only when the broker
        # answered and refused the version (not when it is unreachable).
        if not self._auto_protocol or self._protocol is not None:
            return False
        if exc_protocol is not ProtocolVersion.V5 or not error.startswith("refused:version"):
            return False
        self._protocol = ProtocolVersion.V311
        log.info("broker refuses MQTT 5, using 3.1.1", extra=fields(error=error))
        return True

    def _backoff_s(self, attempts: int) -> float:
        ceiling = min(self._mqtt.reconnect_max_s, RECONNECT_BASE_S * 2 ** min(attempts - 1, 32))
        # "Equal jitter": never less than half the step, so retries stay spread out
        # yet a fleet of gateways does not reconnect in lockstep after an outage.
        return self._rng.uniform(ceiling / 2, ceiling)

    def _make_client(self, protocol: ProtocolVersion) -> aiomqtt.Client:
        mqtt = self._mqtt
        v5 = protocol is ProtocolVersion.V5
        properties: Properties | None = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = mqtt.session_expiry_s
            properties.ReceiveMaximum = mqtt.receive_maximum
            # The broker then drops bigger messages for us instead of sending them;
            # without it a client may make us buffer up to 256 MiB per message before
            # the decoder refuses it as too_large.
            properties.MaximumPacketSize = self._max_packet_bytes
        will = aiomqtt.Will(topic=self.status.topic, payload=self.status.will(), qos=1, retain=True)
        return aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            username=mqtt.username,
            password=mqtt.password.get_secret_value() if mqtt.password is not None else None,
            identifier=self.client_id,
            protocol=protocol,
            will=will,
            # Persistent session: MQTT 3.1.1 says it with clean_session, MQTT 5 with
            # clean_start=False on every connect (paho's FIRST_ONLY would wipe the
            # session the broker kept for us while the agent was down).
            clean_session=None if v5 else False,
            clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            keepalive=mqtt.keepalive_s,
            timeout=self._connect_timeout_s,
            tls_context=self._tls,
            max_queued_incoming_messages=0,
            logger=_client_log,
        )

    async def _start_session(self, conn: _Connection) -> None:
        client = conn.client
        if self._subscribe:
            granted = await client.subscribe(self.subscription, qos=self._mqtt.qos)
            if any(_code_value(code) >= 0x80 for code in granted):
                # Publishing still works; the operator must fix the broker's ACL.
                log.error(
                    "broker refused the telemetry subscription",
                    extra=fields(topic=self.subscription, granted=str(granted)),
                )
        await client.publish(
            self.status.topic,
            self.status.birth(session=conn.session, protocol=_protocol_name(conn.protocol)),
            qos=1,
            retain=True,
        )

    async def _serve(self, conn: _Connection, on_stable: Callable[[], None]) -> None:
        pump = asyncio.create_task(self._pump(conn), name="mqtt-pump")
        closing = asyncio.create_task(self._closing.wait())
        try:
            done, _ = await asyncio.wait(
                (pump, closing), timeout=STABLE_CONNECTION_S, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                on_stable()
                await asyncio.wait((pump, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not pump.done():
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        if not self._closing.is_set():
            pump.result()  # raises the MqttError that ended the connection
            raise aiomqtt.MqttError("message stream ended")

    async def _pump(self, conn: _Connection) -> None:
        session = conn.session
        incoming = self._incoming
        # Never waits on the consumer: a pump stuck on a full queue would not see
        # the connection drop. Backpressure comes from unacknowledged QoS 1 instead.
        receive_maximum = self._mqtt.receive_maximum
        queue_max = self._queue_max
        reads = SocketReads(conn.client)
        reads.take_over()
        self._reads = reads
        async for message in conn.client.messages:
            # Bound what is held in memory even when the broker ignores Receive
            # Maximum: stop reading the socket; messages() resumes it.
            if reads.backlog() + incoming.qsize() >= receive_maximum:
                reads.pause()
            qos = message.qos
            if qos == 0 and incoming.qsize() >= queue_max:
                self.shed += 1
                self._warn_every_interval(
                    "incoming queue full, shedding QoS 0 messages", shed_total=self.shed
                )
                continue
            incoming.put_nowait(
                RawMessage(
                    message.topic.value,
                    message.payload,
                    qos,
                    message.retain,
                    MessageRef(message.mid, qos, session) if qos else None,
                    time.time_ns() // _MS_PER_NS,
                )
            )
            backlog = incoming.qsize()
            if qos and backlog > receive_maximum and backlog > self.overrun_peak:
                self.overrun_peak = backlog
                self._warn_every_interval(
                    "broker sends beyond Receive Maximum",
                    backlog=backlog,
                    receive_maximum=receive_maximum,
                    hint="known Mosquitto 2.0 flow-control bug; larger ack batches avoid it",
                )

    def _warn_every_interval(self, event: str, **values: object) -> None:
        now = time.monotonic()
        if now - self._logged_at.get(event, -math.inf) >= _SHED_LOG_INTERVAL_S:
            self._logged_at[event] = now
            log.warning(event, extra=fields(**values))

    async def _say_offline(self, conn: _Connection) -> None:
        if not self._publish_offline:
            return
        with contextlib.suppress(aiomqtt.MqttError):
            await conn.client.publish(
                self.status.topic, self.status.offline("shutdown"), qos=1, retain=True
            )

    # -- receiving, acknowledging, publishing --------------------------------------

    async def messages(self) -> AsyncGenerator[RawMessage, None]:
        """Messages from every connection, in arrival order, until the link is closed."""
        incoming = self._incoming
        low_water = self._mqtt.receive_maximum // 4
        while True:
            message = await incoming.get()
            if message is None:
                incoming.put_nowait(None)  # later iterators end too
                return
            reads = self._reads
            if (
                reads is not None
                and reads.paused
                and reads.backlog() + incoming.qsize() <= low_water
            ):
                reads.resume()
            yield message

    def pending(self) -> int:
        """Messages received but not yet taken by ``messages()``."""
        return self._incoming.qsize()

    def ack(self, refs: Iterable[MessageRef | None]) -> int:
        """Acknowledge committed messages; returns PUBACKs sent.

        Refs of an earlier connection are dropped (counted in
        ``metrics.acks_dropped_stale``): the broker redelivers those messages and
        idempotent writes absorb the repeat.
        """
        real = [ref for ref in refs if ref is not None]
        conn = self._conn
        if conn is None:
            self._metrics.acks_dropped_stale += sum(1 for ref in real if ref.qos)
            return 0
        before = conn.acks.stale
        sent = conn.acks.ack(real)
        self._metrics.acks_sent += sent
        self._metrics.acks_dropped_stale += conn.acks.stale - before
        return sent

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float | None = None,
    ) -> bool:
        """Publish, waiting for a connection if needed; False if not done within the timeout.

        QoS 1 returns once the broker acknowledged. After a lost connection the
        publish is retried on the next one, so a QoS 1 message may arrive twice.
        Returns False at once when the link is closing and not connected.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._publish_timeout_s if timeout_s is None else timeout_s)
        failed_session = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            conn = self._conn
            if conn is None or conn.session == failed_session:
                if self._closing.is_set() or self._stopped.is_set():
                    return False
                await self._wait_change(remaining)
                continue
            try:
                await conn.client.publish(topic, payload, qos=qos, retain=retain, timeout=remaining)
            except aiomqtt.MqttError as exc:
                failed_session = conn.session
                log.debug("publish failed", extra=fields(topic=topic, error=_describe(exc)))
                continue
            return True


def _protocol_name(protocol: ProtocolVersion) -> str:
    return "5" if protocol is ProtocolVersion.V5 else "3.1.1"


def _code_value(code: int | ReasonCode) -> int:
    return code.value if isinstance(code, ReasonCode) else code


def _is_decade(attempts: int) -> bool:
    n = attempts
    while n % _STILL_DOWN_EVERY == 0:
        n //= _STILL_DOWN_EVERY
    return n == 1 and attempts > 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MqttConnectError):
        value = _code_value(exc.rc or 0)
        kind = "refused:version" if value in _VERSION_REFUSED else "refused"
        return f"{kind} {exc}"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
