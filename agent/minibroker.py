"""A small MQTT 3.1.1 broker in pure Python, for machines without Mosquitto.

``edgewatch demo`` falls back to it so that the first command of the README works
where ``apt-get install mosquitto`` was not possible. It runs in its own process
(``python -m agent.minibroker --port N``), like Mosquitto, so that it never competes
with the agent for the GIL. It implements what the demo needs and what the agent
relies on, as the standard says it:

- persistent sessions (clean session 0): subscriptions and QoS 1 messages are kept
  while the client is away, and unacknowledged ones are sent again, DUP set, when it
  returns; a bounded in-flight window per client;
- QoS 0 and 1 to subscribers (QoS 2 publishes are accepted exactly once and
  delivered at QoS 1: subscriptions are granted at most QoS 1);
- retained messages, Last Will, keep-alive, client take-over, ``+``/``#`` filters.

One client never holds up another: each connection has its own writer task and a
bounded outgoing buffer, and routing a message only queues it. What a slow or stuck
subscriber cannot take is bounded and dropped, counted in the log:

- QoS 0 messages are dropped while its outgoing buffer is full;
- QoS 1 messages wait in its session queue, at most ``max_queued`` messages and
  ``max_queued_bytes``; past that the *oldest* is dropped, so a client that catches up
  (or comes back) gets the newest data, which is what a monitoring client needs;
- a client that lets even its acknowledgements pile up (it publishes but never
  reads) is disconnected.

A persistent session whose client stays away longer than ``session_expiry_s``
(default 1 hour) is discarded with its queue.

An MQTT 5 CONNECT is refused with reason 0x84 (unsupported protocol version), which
the agent's link answers by speaking 3.1.1. It is not meant for a plant: no TLS, no
authentication, state in memory only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import struct
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

log = logging.getLogger("edgewatch.minibroker")

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = range(8, 15)

MAX_PACKET_BYTES: Final = 1024 * 1024
MAX_INFLIGHT: Final = 1000
#: Bytes written to a socket in one go by a connection's writer task.
WRITE_CHUNK_BYTES: Final = 256 * 1024
#: Acknowledgements and pings a client may leave unread beyond its outgoing buffer.
CONTROL_SLACK_BYTES: Final = 1024 * 1024
#: How long a closed connection may take to send its last bytes before it is cut.
CLOSE_GRACE_S: Final = 10.0
_ACCEPTED, _REFUSED_VERSION, _REFUSED_ID = 0, 1, 2
#: MQTT 5 CONNACK: flags 0, reason 0x84 "Unsupported Protocol Version", no properties.
_V5_VERSION_REFUSED: Final = bytes([CONNACK << 4, 3, 0, 0x84, 0])


@dataclass(frozen=True)
class BrokerLimits:
    """How much one client may cost the broker, and how long an absent one is kept."""

    #: QoS 1 messages kept per client beyond its in-flight window (while it is away, too).
    max_queued: int = 200_000
    max_queued_bytes: int = 128 * 1024 * 1024
    #: Sent but not yet acknowledged, per client.
    max_inflight: int = MAX_INFLIGHT
    max_inflight_bytes: int = 16 * 1024 * 1024
    #: Written to a connection but not yet taken by its socket.
    max_outgoing_bytes: int = 4 * 1024 * 1024
    #: A persistent session whose client has been away this long is discarded.
    session_expiry_s: float = 3600.0

    def __post_init__(self) -> None:
        if min(self.max_queued, self.max_inflight) < 1 or not self.session_expiry_s > 0:
            raise ValueError("broker limits must be positive")


def _size(msg: Message) -> int:
    return len(msg.topic) + len(msg.payload)


def _report_drop(client_id: str, why: str, qos: int, count: int) -> None:
    # The 1st, 10th, 100th, then every 1000th: counted without flooding the log.
    if count in (1, 10, 100) or count % 1000 == 0:
        plural = "" if count == 1 else "s"
        log.warning("%r: %s, %d QoS %d message%s dropped", client_id, why, count, qos, plural)


class ProtocolError(Exception):
    """A client broke the protocol; its connection is closed, the broker goes on."""


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching; wildcards never match a ``$`` topic's first level."""
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    want, have = pattern.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or (level != "+" and level != have[i]):
            return False
    return len(want) == len(have)


def valid_filter(pattern: str) -> bool:
    levels = pattern.split("/")
    if not pattern or any(("+" in lv and lv != "+") or ("#" in lv and lv != "#") for lv in levels):
        return False
    return "#" not in levels[:-1]


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (128 if n else 0))
        if not n:
            return bytes(out)


def packet(kind: int, body: bytes, flags: int = 0) -> bytes:
    return bytes([kind << 4 | flags]) + _length(len(body)) + body


def _text(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!H", len(raw)) + raw


def publish_packet(msg: Message, qos: int, packet_id: int, *, retain: bool, dup: bool) -> bytes:
    flags = (8 if dup else 0) | qos << 1 | (1 if retain else 0)
    ident = struct.pack("!H", packet_id) if qos else b""
    return packet(PUBLISH, _text(msg.topic) + ident + msg.payload, flags)


class _Body:
    """Reads the fields of one packet's body; a short body is a protocol error."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("packet shorter than its fields")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def binary(self) -> bytes:
        return self.take(self.u16())

    def text(self) -> str:
        try:
            return self.binary().decode()
        except UnicodeDecodeError:
            raise ProtocolError("a string field is not UTF-8") from None

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    def done(self) -> bool:
        return self.pos >= len(self.data)


@dataclass(eq=False)
class Session:
    client_id: str
    persistent: bool
    limits: BrokerLimits
    subscriptions: dict[str, int] = field(default_factory=dict)
    queue: deque[tuple[Message, int]] = field(default_factory=deque)
    queued_bytes: int = 0
    inflight: OrderedDict[int, tuple[Message, int]] = field(default_factory=OrderedDict)
    inflight_bytes: int = 0
    conn: Connection | None = None
    #: When a persistent session whose client went away is discarded (clock seconds).
    expires_at: float | None = None
    dropped_qos0: int = 0
    dropped_qos1: int = 0
    _resend: deque[int] = field(default_factory=deque)
    _next_id: int = 0

    def packet_id(self) -> int:
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self.inflight:
                return self._next_id

    def deliver(self, msg: Message, qos: int) -> None:
        """Queue ``msg`` for this client; never waits, whatever the client's socket does."""
        if qos == 0:
            # At most once: nothing is kept for a client that is away or cannot take it.
            if self.conn is None:
                return
            if not self.conn.offer(publish_packet(msg, 0, 0, retain=msg.retain, dup=False)):
                self.dropped_qos0 += 1
                _report_drop(self.client_id, "outgoing buffer full", 0, self.dropped_qos0)
            return
        self.queue.append((msg, qos))
        self.queued_bytes += _size(msg)
        limits = self.limits
        while len(self.queue) > limits.max_queued or self.queued_bytes > limits.max_queued_bytes:
            old, _ = self.queue.popleft()
            self.queued_bytes -= _size(old)
            self.dropped_qos1 += 1
            _report_drop(self.client_id, "queue full", 1, self.dropped_qos1)
        self.pump()

    def pump(self) -> None:
        """Send what the in-flight window and the connection's outgoing buffer allow."""
        conn = self.conn
        while conn is not None and self._resend and conn.has_room():
            ident = self._resend.popleft()
            if ident in self.inflight:
                msg, qos = self.inflight[ident]
                conn.send(publish_packet(msg, qos, ident, retain=msg.retain, dup=True))
        while (
            conn is not None
            and not self._resend
            and self.queue
            and len(self.inflight) < self.limits.max_inflight
            and self.inflight_bytes < self.limits.max_inflight_bytes
            and conn.has_room()
        ):
            msg, qos = self.queue.popleft()
            self.queued_bytes -= _size(msg)
            ident = self.packet_id()
            self.inflight[ident] = (msg, qos)
            self.inflight_bytes += _size(msg)
            conn.send(publish_packet(msg, qos, ident, retain=msg.retain, dup=False))

    def resume(self) -> None:
        """After a reconnect: what was sent but not acknowledged goes again, in order."""
        self._resend = deque(self.inflight)
        self.pump()

    def acked(self, ident: int) -> None:
        entry = self.inflight.pop(ident, None)
        if entry is not None:
            self.inflight_bytes -= _size(entry[0])
            self.pump()


class Connection:
    """One client's socket: packets are queued here and written by the connection's own task.

    ``send`` is for what the client itself caused (acknowledgements, pings): always
    queued, but a client that leaves more than the outgoing bound plus
    :data:`CONTROL_SLACK_BYTES` unread is disconnected. Deliveries check
    :meth:`has_room` (or use :meth:`offer`) first, and ``on_writable`` tells the session
    when the socket took some.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: BrokerLimits
    ) -> None:
        self.reader, self.writer = reader, writer
        self.limits = limits
        self.session: Session | None = None
        self.will: Message | None = None
        self.keepalive_s = 0
        self.qos2_pending: set[int] = set()
        self.on_writable: Callable[[], None] | None = None
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._wake = asyncio.Event()
        self._writer_task = asyncio.get_running_loop().create_task(self._write_loop())

    def pending_bytes(self) -> int:
        """Queued here or in the transport, not yet taken by the socket."""
        return self._out_bytes + self.writer.transport.get_write_buffer_size()

    def has_room(self) -> bool:
        return (
            not self.writer.is_closing() and self.pending_bytes() < self.limits.max_outgoing_bytes
        )

    def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        self._out.append(data)
        self._out_bytes += len(data)
        self._wake.set()
        if self.pending_bytes() > self.limits.max_outgoing_bytes + CONTROL_SLACK_BYTES:
            client = self.session.client_id if self.session else "?"
            log.warning("%r reads nothing it is sent: disconnecting it", client)
            self.writer.transport.abort()

    def offer(self, data: bytes) -> bool:
        """Queue ``data`` if the outgoing buffer has room; False (not sent) otherwise."""
        if not self.has_room():
            return False
        self.send(data)
        return True

    async def _write_loop(self) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._out:
                    chunk: list[bytes] = []
                    size = 0
                    while self._out and size < WRITE_CHUNK_BYTES:
                        data = self._out.popleft()
                        chunk.append(data)
                        size += len(data)
                    self._out_bytes -= size
                    self.writer.writelines(chunk)
                    # Waits for this client's socket only: nobody else is held up here.
                    await self.writer.drain()
                    if self.on_writable is not None:
                        self.on_writable()

    async def read_packet(self) -> tuple[int, int, bytes]:
        first = (await self.reader.readexactly(1))[0]
        length, shift = 0, 0
        for _ in range(4):
            byte = (await self.reader.readexactly(1))[0]
            length |= (byte & 127) << shift
            shift += 7
            if not byte & 128:
                break
        else:
            raise ProtocolError("remaining length longer than 4 bytes")
        if length > MAX_PACKET_BYTES:
            raise ProtocolError(f"packet of {length} bytes exceeds {MAX_PACKET_BYTES}")
        return first >> 4, first & 15, await self.reader.readexactly(length)

    def close(self) -> None:
        """Close after sending what is queued (a CONNACK refusal, say), within a grace period."""
        self.on_writable = None
        self._writer_task.cancel()
        if self._out and not self.writer.is_closing():
            self.writer.writelines(self._out)
        self._out.clear()
        self._out_bytes = 0
        self.writer.close()
        # A peer that reads nothing would keep the socket and its buffer for ever.
        asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self.writer.transport.abort)


class Broker:
    """The broker's state; ``clock`` (seconds, monotonic) is injectable for session expiry."""

    def __init__(
        self, limits: BrokerLimits | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or BrokerLimits()
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.retained: dict[str, Message] = {}

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._client, host, port)

    async def expire_sessions_forever(self) -> None:
        """Discard expired sessions, checking a few times per expiry interval."""
        every_s = min(max(self.limits.session_expiry_s / 4, 0.05), 60.0)
        while True:
            await asyncio.sleep(every_s)
            self.expire_sessions()

    def expire_sessions(self) -> list[str]:
        """Discard the persistent sessions whose clients stayed away too long; their ids."""
        now = self.clock()
        expired = [
            s
            for s in self.sessions.values()
            if s.conn is None and s.expires_at is not None and s.expires_at <= now
        ]
        for session in expired:
            del self.sessions[session.client_id]
            log.info(
                "session %r expired after %.0f s away: %d queued and %d unacknowledged "
                "messages dropped",
                session.client_id,
                self.limits.session_expiry_s,
                len(session.queue),
                len(session.inflight),
            )
        return [s.client_id for s in expired]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, self.limits)
        clean_exit = False
        try:
            kind, _flags, body = await asyncio.wait_for(conn.read_packet(), timeout=10)
            if kind != CONNECT or not self._connect(conn, _Body(body)):
                return
            while True:
                timeout = conn.keepalive_s * 1.5 if conn.keepalive_s else None
                kind, flags, body = await asyncio.wait_for(conn.read_packet(), timeout)
                if kind == DISCONNECT:
                    clean_exit = True
                    return
                self._handle(conn, kind, flags, _Body(body))
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except ProtocolError as exc:
            log.warning("closing a client that broke the protocol: %s", exc)
        finally:
            self._disconnected(conn, clean_exit)

    def _connect(self, conn: Connection, body: _Body) -> bool:
        name, level = body.text(), body.u8()
        if level == 5:
            conn.send(_V5_VERSION_REFUSED)
            return False
        if name != "MQTT" or level != 4:
            conn.send(packet(CONNACK, bytes([0, _REFUSED_VERSION])))
            return False
        flags, conn.keepalive_s = body.u8(), body.u16()
        client_id, clean = body.text(), bool(flags & 2)
        if flags & 4:
            topic, payload = body.text(), body.binary()
            conn.will = Message(topic, payload, min((flags >> 3) & 3, 1), bool(flags & 32))
        if not client_id:
            if not clean:
                conn.send(packet(CONNACK, bytes([0, _REFUSED_ID])))
                return False
            client_id = f"anon-{uuid.uuid4().hex[:12]}"
        session = self.sessions.get(client_id)
        if session is not None and session.conn is not None:
            log.info("client %r connected again: closing its old connection", client_id)
            session.conn.close()
            session.conn.session = None
            self._publish_will(session.conn)
            session.conn = None
        present = session is not None and not clean
        if session is None or clean:
            session = Session(client_id, persistent=not clean, limits=self.limits)
            self.sessions[client_id] = session
        session.persistent = not clean
        session.expires_at = None
        session.conn, conn.session = conn, session
        conn.on_writable = session.pump
        conn.send(packet(CONNACK, bytes([1 if present else 0, _ACCEPTED])))
        session.resume()
        return True

    def _handle(self, conn: Connection, kind: int, flags: int, body: _Body) -> None:
        session = conn.session
        if session is None:  # taken over by a newer connection of the same client
            raise ConnectionError
        if kind == PUBLISH:
            self._on_publish(conn, flags, body)
        elif kind == PUBACK:
            session.acked(body.u16())
        elif kind == PUBREL:
            ident = body.u16()
            conn.qos2_pending.discard(ident)
            conn.send(packet(PUBCOMP, struct.pack("!H", ident)))
        elif kind == SUBSCRIBE:
            self._on_subscribe(conn, session, body)
        elif kind == UNSUBSCRIBE:
            ident = body.u16()
            while not body.done():
                session.subscriptions.pop(body.text(), None)
            conn.send(packet(UNSUBACK, struct.pack("!H", ident)))
        elif kind == PINGREQ:
            conn.send(packet(PINGRESP, b""))
        elif kind in (PUBREC, PUBCOMP):
            pass  # only sent for QoS 2 deliveries, which this broker never makes
        else:
            raise ProtocolError(f"unexpected packet type {kind}")

    def _on_publish(self, conn: Connection, flags: int, body: _Body) -> None:
        qos, retain = (flags >> 1) & 3, bool(flags & 1)
        topic = body.text()
        if qos > 2 or not topic or "+" in topic or "#" in topic:
            raise ProtocolError(f"invalid PUBLISH (qos {qos}, topic {topic!r})")
        ident = body.u16() if qos else 0
        msg = Message(topic, body.rest(), min(qos, 1), retain)
        if qos == 2:
            # Exactly once in: a repeat of a PUBLISH not yet released is not routed again.
            if ident not in conn.qos2_pending:
                conn.qos2_pending.add(ident)
                self.route(msg)
            conn.send(packet(PUBREC, struct.pack("!H", ident)))
            return
        self.route(msg)
        if qos == 1:
            conn.send(packet(PUBACK, struct.pack("!H", ident)))

    def _on_subscribe(self, conn: Connection, session: Session, body: _Body) -> None:
        ident = body.u16()
        granted = bytearray()
        new: list[tuple[str, int]] = []
        while not body.done():
            pattern, qos = body.text(), body.u8() & 3
            if not valid_filter(pattern):
                granted.append(0x80)
                continue
            session.subscriptions[pattern] = min(qos, 1)
            granted.append(min(qos, 1))
            new.append((pattern, min(qos, 1)))
        if not granted:
            raise ProtocolError("SUBSCRIBE without a topic filter")
        conn.send(packet(SUBACK, struct.pack("!H", ident) + bytes(granted)))
        for msg in list(self.retained.values()):
            qos = max((q for p, q in new if topic_matches(p, msg.topic)), default=-1)
            if qos >= 0:
                session.deliver(Message(msg.topic, msg.payload, msg.qos, True), min(qos, msg.qos))

    def route(self, msg: Message) -> None:
        """Queue ``msg`` for every matching subscriber; never waits for any of them."""
        if msg.retain:
            if msg.payload:
                self.retained[msg.topic] = msg
            else:
                self.retained.pop(msg.topic, None)
        # A retained flag is kept only for messages sent because of a new subscription.
        forward = Message(msg.topic, msg.payload, msg.qos, False)
        for session in list(self.sessions.values()):
            qos = max(
                (q for p, q in session.subscriptions.items() if topic_matches(p, msg.topic)),
                default=-1,
            )
            if qos < 0:
                continue
            session.deliver(forward, min(qos, msg.qos))

    def _disconnected(self, conn: Connection, clean_exit: bool) -> None:
        session = conn.session
        if session is not None:
            session.conn = None
            if not session.persistent:
                self.sessions.pop(session.client_id, None)
            else:
                session.expires_at = self.clock() + self.limits.session_expiry_s
            if not clean_exit:
                self._publish_will(conn)
        conn.session = None
        conn.close()

    def _publish_will(self, conn: Connection) -> None:
        will, conn.will = conn.will, None
        if will is not None:
            self.route(will)


async def serve_forever(host: str, port: int, limits: BrokerLimits | None = None) -> None:
    broker = Broker(limits)
    server = await broker.serve(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening on %s:%d", host, port)
    async with server, asyncio.TaskGroup() as tasks:
        expiry = tasks.create_task(broker.expire_sessions_forever())
        await stop.wait()
        expiry.cancel()


def main(argv: list[str] | None = None) -> None:
    defaults = BrokerLimits()
    parser = argparse.ArgumentParser(
        prog="python -m agent.minibroker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument(
        "--max-queued",
        type=int,
        default=defaults.max_queued,
        help="QoS 1 messages kept per client beyond its in-flight window; the oldest go first",
    )
    parser.add_argument(
        "--max-queued-bytes",
        type=int,
        default=defaults.max_queued_bytes,
        help="the same bound in bytes",
    )
    parser.add_argument(
        "--session-expiry-s",
        type=float,
        default=defaults.session_expiry_s,
        help="discard a persistent session whose client is away this long ('inf': never)",
    )
    args = parser.parse_args(argv)
    try:
        limits = BrokerLimits(
            max_queued=args.max_queued,
            max_queued_bytes=args.max_queued_bytes,
            session_expiry_s=args.session_expiry_s,
        )
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve_forever(args.host, args.port, limits))


if __name__ == "__main__":
    main()
