"""A lean MQTT 3.1.1 publisher (QoS 0 and 1) speaking the wire protocol directly.

Why not paho: measured on the 2-core gateway class machine this project targets,
paho spends most of each QoS 1 publish in its own bookkeeping (a properties object per
PUBACK, one ``send`` per packet, locks): about 6,000 msg/s with the threaded client
and under 20,000 msg/s driven from one thread. This client packs many PUBLISH
packets into one ``send`` and parses PUBACKs in bulk, which is what the 20,000 msg/s
benchmark target needs. It implements only what a publisher uses: CONNECT/CONNACK,
PUBLISH, PUBACK, PINGREQ/PINGRESP, DISCONNECT.

Delivery guarantees are the same as :class:`simulators.publisher.PahoPublisher`: at
most ``max_inflight`` unacknowledged messages, every QoS 1 message kept until its
PUBACK, resent with the DUP flag after a reconnect, and a report of what was not
acknowledged when the broker stays away longer than ``reconnect_timeout_s``.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from types import TracebackType

from agent.errors import BrokerError
from simulators.publisher import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_RECONNECT_TIMEOUT_S,
    MAX_REPORTED_SEQS,
    PublishResult,
)

_CONNECT = 0x10
_CONNACK = 0x20
_PUBLISH = 0x30
_PUBACK = 0x40
_PINGREQ = b"\xc0\x00"
_PINGRESP = 0xD0
_DISCONNECT = b"\xe0\x00"
_DUP = 0x08
_MAX_MID = 65_535
#: Outgoing bytes collected before one ``send``; large enough to amortise the
#: syscall, small enough that acknowledgements keep coming back steadily.
_FLUSH_BYTES = 32 * 1024
#: How long one blocked wait lasts before the loop re-checks its conditions.
_WAIT_SLICE_S = 0.25
_RECONNECT_BACKOFF_S = 0.25
#: A send that makes no progress for this long means the connection is dead.
_SEND_TIMEOUT_S = 10.0
_CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}
_client_ids = itertools.count()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _str16(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


class WirePublisher:
    """Bounded-in-flight MQTT 3.1.1 publisher; see :class:`simulators.publisher.Publisher`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        qos: int = 1,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 30,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        reconnect_timeout_s: float = DEFAULT_RECONNECT_TIMEOUT_S,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    ) -> None:
        if qos not in (0, 1):
            raise ValueError("the wire publisher supports QoS 0 and 1")
        if not 1 <= max_inflight <= 32_767:
            # Half the id space at most: a resent id can then never meet a new one.
            raise ValueError("max_inflight must be within 1..32767")
        self.host = host
        self.port = port
        self.qos = qos
        self.max_inflight = max_inflight
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.result = PublishResult()
        self._client_id = (
            client_id or f"edgewatch-sim-{int(time.time() * 1000) % 10**9}-{next(_client_ids)}"
        )
        self._username = username
        self._password = password
        self._sock: socket.socket | None = None
        self._out = bytearray()
        self._out_qos0: list[int] = []  # readings of QoS 0 messages in _out
        self._in = bytearray()
        self._pending: dict[int, tuple[int, int, bytes]] = {}  # mid -> (seq, readings, packet)
        self._topics: dict[str, bytes] = {}
        self._next_mid = 0
        self._last_send = 0.0
        self._down_since: float | None = None
        self._gave_up = False
        self._started = 0.0
        self._closed = False

    # -- connection ----------------------------------------------------------------

    def _connect_packet(self) -> bytes:
        flags = 0x02  # clean session: the publisher keeps its own in-flight state
        payload = _str16(self._client_id.encode())
        if self._username is not None:
            flags |= 0x80
            payload += _str16(self._username.encode())
            if self._password is not None:
                flags |= 0x40
                payload += _str16(self._password.encode())
        var = b"\x00\x04MQTT\x04" + bytes([flags]) + self.keepalive_s.to_bytes(2, "big")
        return bytes([_CONNECT]) + _varint(len(var) + len(payload)) + var + payload

    def _open(self, timeout_s: float) -> None:
        """TCP connect, CONNECT, wait for CONNACK. Raises OSError or BrokerError."""
        sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(self._connect_packet())
            ack = b""
            while len(ack) < 4:
                chunk = sock.recv(4 - len(ack))
                if not chunk:
                    raise ConnectionResetError("broker closed the connection before CONNACK")
                ack += chunk
            if ack[0] != _CONNACK:
                raise BrokerError(f"MQTT broker at {self.host}:{self.port} did not answer CONNACK")
            if ack[3] != 0:
                reason = _CONNACK_CODES.get(ack[3], f"code {ack[3]}")
                raise BrokerError(
                    f"MQTT broker at {self.host}:{self.port} refused the connection: {reason}",
                    hint="check the broker address and its access rules",
                )
            sock.settimeout(_SEND_TIMEOUT_S)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._in.clear()
        self._last_send = time.monotonic()

    def connect(self) -> None:
        """Connect and wait for the broker's CONNACK; raises BrokerError if unreachable."""
        try:
            self._open(self.connect_timeout_s)
        except OSError as exc:
            raise BrokerError(
                f"cannot reach MQTT broker at {self.host}:{self.port}: {exc.strerror or exc}",
                hint="start mosquitto or pass --broker",
            ) from None
        self._started = time.monotonic()

    def __enter__(self) -> WirePublisher:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _lost(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            if not self._closed:
                self.result.disconnects += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._in.clear()
        # QoS 1 messages live on in _pending and are resent; QoS 0 ones are gone.
        self._out.clear()
        self._out_qos0.clear()

    def _reconnect(self) -> None:
        """Try to come back until the reconnect timeout; then give up for good."""
        while self._sock is None and not self._gave_up:
            down = self._down_since if self._down_since is not None else time.monotonic()
            remaining = self.reconnect_timeout_s - (time.monotonic() - down)
            if remaining <= 0:
                self._gave_up = True
                return
            try:
                self._open(min(remaining, self.connect_timeout_s))
            except (OSError, BrokerError):
                time.sleep(min(_RECONNECT_BACKOFF_S, max(remaining, 0.0)))
                continue
            self.result.reconnects += 1
            self._down_since = None
            # Everything unacknowledged goes again, in its original order.
            for _seq, _readings, packet in self._pending.values():
                self._out += bytes([packet[0] | _DUP]) + packet[1:]
            self._send_out()

    # -- I/O -----------------------------------------------------------------------

    def _send_out(self) -> None:
        sock = self._sock
        if sock is None or not self._out:
            return
        try:
            sock.sendall(self._out)
        except OSError:
            self._lost()
            return
        self._last_send = time.monotonic()
        self._out.clear()
        if self._out_qos0:
            # QoS 0 has no acknowledgement: written to the socket is as sent as it gets.
            self.result.sent += len(self._out_qos0)
            self.result.readings_sent += sum(self._out_qos0)
            self._out_qos0.clear()

    def _read(self, timeout_s: float) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.settimeout(timeout_s if timeout_s > 0 else 0.0)
            data = sock.recv(65_536)
        except (TimeoutError, BlockingIOError):
            return
        except OSError:
            self._lost()
            return
        finally:
            if self._sock is not None:
                self._sock.settimeout(_SEND_TIMEOUT_S)
        if not data:
            self._lost()
            return
        buf = self._in
        buf += data
        pending = self._pending
        result = self.result
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            kind = buf[pos] & 0xF0
            # Remaining length: 1 to 4 bytes, 7 bits each.
            length = 0
            shift = 0
            i = pos + 1
            while True:
                if i >= end:
                    length = -1
                    break
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if not byte & 0x80:
                    break
                shift += 7
            if length < 0 or i + length > end:
                break
            if kind == _PUBACK and length >= 2:
                entry = pending.pop((buf[i] << 8) | buf[i + 1], None)
                if entry is not None:
                    result.sent += 1
                    result.readings_sent += entry[1]
            pos = i + length
        del buf[:pos]

    def _service(self, timeout_s: float) -> None:
        """Send what is queued, read acknowledgements, keep alive, reconnect if down."""
        if self._sock is None:
            self._reconnect()
            return
        self._send_out()
        # The broker drops clients that send nothing for 1.5 keep-alive periods.
        if time.monotonic() - self._last_send > self.keepalive_s / 2:
            self._out += _PINGREQ
            self._send_out()
        self._read(timeout_s)

    # -- public API ----------------------------------------------------------------

    def publish(self, seq: int, topic: str, payload: bytes, readings: int = 1) -> bool:
        """Queue one message; blocks while ``max_inflight`` are unacknowledged.

        Returns False once the publisher has given up on the broker.
        """
        self.result.attempted += 1
        if self.result.attempted == 1:
            # The rate covers publishing, not connecting or preparing the data.
            self._started = time.monotonic()
        pending = self._pending
        while len(pending) >= self.max_inflight or self._sock is None:
            if self._gave_up:
                return False
            self._service(_WAIT_SLICE_S)
        if self._gave_up:
            return False
        topic_b = self._topics.get(topic)
        if topic_b is None:
            topic_b = self._topics[topic] = _str16(topic.encode())
        if self.qos == 1:
            mid = self._next_mid
            while True:
                mid = mid % _MAX_MID + 1
                if mid not in pending:
                    break
            self._next_mid = mid
            header = topic_b + mid.to_bytes(2, "big")
            packet = (
                bytes([_PUBLISH | 0x02]) + _varint(len(header) + len(payload)) + header + payload
            )
            pending[mid] = (seq, readings, packet)
        else:
            packet = bytes([_PUBLISH]) + _varint(len(topic_b) + len(payload)) + topic_b + payload
            self._out_qos0.append(readings)
        self._out += packet
        if len(self._out) >= _FLUSH_BYTES:
            self._send_out()
            self._read(0.0)
        return True

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Keep the connection serviced for ``seconds``; True if ``stop`` was set."""
        deadline = time.monotonic() + seconds
        while True:
            if stop is not None and stop.is_set():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._service(min(remaining, _WAIT_SLICE_S))

    @property
    def gave_up(self) -> bool:
        return self._gave_up

    def flush(self, timeout_s: float | None = None) -> bool:
        """Send everything and wait for every acknowledgement; False on timeout/give-up."""
        deadline = time.monotonic() + (self.drain_timeout_s if timeout_s is None else timeout_s)
        while self._pending or self._out:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._gave_up:
                return False
            self._service(min(remaining, _WAIT_SLICE_S))
        return True

    def close(self) -> PublishResult:
        """Drain, disconnect and return the final :class:`PublishResult`."""
        if self._closed:
            return self.result
        drained = self.flush()
        self._closed = True
        if self._gave_up:
            self.result.errors.append(
                f"broker {self.host}:{self.port} unreachable for more than "
                f"{self.reconnect_timeout_s:g} s: gave up"
            )
        if not drained and len(self._pending):
            self.result.errors.append(f"{len(self._pending)} message(s) not acknowledged")
        self.result.unacked_seqs = sorted(s for s, _r, _p in self._pending.values())[
            :MAX_REPORTED_SEQS
        ]
        self.result.elapsed_s = time.monotonic() - self._started if self._started else 0.0
        if self._sock is not None:
            # If the broker is gone already there is nothing left to tell it.
            with contextlib.suppress(OSError):
                self._sock.sendall(_DISCONNECT)
            self._sock.close()
            self._sock = None
        return self.result
