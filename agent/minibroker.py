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
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Final

log = logging.getLogger("edgewatch.minibroker")

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = range(8, 15)

MAX_PACKET_BYTES: Final = 1024 * 1024
MAX_INFLIGHT: Final = 1000
#: QoS 1 messages kept per client beyond its in-flight window (while it is away, too).
MAX_QUEUED: Final = 200_000
_ACCEPTED, _REFUSED_VERSION, _REFUSED_ID = 0, 1, 2
#: MQTT 5 CONNACK: flags 0, reason 0x84 "Unsupported Protocol Version", no properties.
_V5_VERSION_REFUSED: Final = bytes([CONNACK << 4, 3, 0, 0x84, 0])


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
    subscriptions: dict[str, int] = field(default_factory=dict)
    queue: deque[tuple[Message, int]] = field(default_factory=deque)
    inflight: OrderedDict[int, tuple[Message, int]] = field(default_factory=OrderedDict)
    conn: Connection | None = None
    dropped: int = 0
    _next_id: int = 0

    def packet_id(self) -> int:
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self.inflight:
                return self._next_id

    def deliver(self, msg: Message, qos: int) -> None:
        if qos == 0:
            if self.conn is not None:
                self.conn.send(publish_packet(msg, 0, 0, retain=msg.retain, dup=False))
            return
        if len(self.queue) >= MAX_QUEUED:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("%s: queue full, %d dropped", self.client_id, self.dropped)
            return
        self.queue.append((msg, qos))
        self.pump()

    def pump(self) -> None:
        while self.conn is not None and self.queue and len(self.inflight) < MAX_INFLIGHT:
            msg, qos = self.queue.popleft()
            ident = self.packet_id()
            self.inflight[ident] = (msg, qos)
            self.conn.send(publish_packet(msg, qos, ident, retain=msg.retain, dup=False))

    def resume(self) -> None:
        """After a reconnect: what was sent but not acknowledged goes again, in order."""
        assert self.conn is not None
        for ident, (msg, qos) in self.inflight.items():
            self.conn.send(publish_packet(msg, qos, ident, retain=msg.retain, dup=True))
        self.pump()

    def acked(self, ident: int) -> None:
        if self.inflight.pop(ident, None) is not None:
            self.pump()


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.session: Session | None = None
        self.will: Message | None = None
        self.keepalive_s = 0
        self.qos2_pending: set[int] = set()

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

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
        self.writer.close()


class Broker:
    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.retained: dict[str, Message] = {}
        self._wills: set[asyncio.Task[None]] = set()

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._client, host, port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer)
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
                await self._handle(conn, kind, flags, _Body(body))
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
            log.info("client %s connected again: closing its old connection", client_id)
            session.conn.close()
            session.conn.session = None
            self._publish_will(session.conn)
            session.conn = None
        present = session is not None and not clean
        if session is None or clean:
            session = Session(client_id, persistent=not clean)
            self.sessions[client_id] = session
        session.persistent = not clean
        session.conn, conn.session = conn, session
        conn.send(packet(CONNACK, bytes([1 if present else 0, _ACCEPTED])))
        session.resume()
        return True

    async def _handle(self, conn: Connection, kind: int, flags: int, body: _Body) -> None:
        session = conn.session
        if session is None:  # taken over by a newer connection of the same client
            raise ConnectionError
        if kind == PUBLISH:
            await self._on_publish(conn, flags, body)
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

    async def _on_publish(self, conn: Connection, flags: int, body: _Body) -> None:
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
                await self.route(msg)
            conn.send(packet(PUBREC, struct.pack("!H", ident)))
            return
        await self.route(msg)
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

    async def route(self, msg: Message) -> None:
        if msg.retain:
            if msg.payload:
                self.retained[msg.topic] = msg
            else:
                self.retained.pop(msg.topic, None)
        # A retained flag is kept only for messages sent because of a new subscription.
        forward = Message(msg.topic, msg.payload, msg.qos, False)
        busy: list[Connection] = []
        for session in self.sessions.values():
            qos = max(
                (q for p, q in session.subscriptions.items() if topic_matches(p, msg.topic)),
                default=-1,
            )
            if qos < 0:
                continue
            session.deliver(forward, min(qos, msg.qos))
            if session.conn is not None:
                busy.append(session.conn)
        # A slow subscriber slows its publishers instead of growing the broker's buffers.
        for conn in busy:
            await conn.drain()

    def _disconnected(self, conn: Connection, clean_exit: bool) -> None:
        session = conn.session
        if session is not None:
            session.conn = None
            if not session.persistent:
                self.sessions.pop(session.client_id, None)
            if not clean_exit:
                self._publish_will(conn)
        conn.session = None
        conn.close()

    def _publish_will(self, conn: Connection) -> None:
        will, conn.will = conn.will, None
        if will is not None:
            task = asyncio.get_running_loop().create_task(self.route(will))
            self._wills.add(task)
            task.add_done_callback(self._wills.discard)


async def serve_forever(host: str, port: int) -> None:
    broker = Broker()
    server = await broker.serve(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening on %s:%d", host, port)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agent.minibroker", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve_forever(args.host, args.port))


if __name__ == "__main__":
    main()
