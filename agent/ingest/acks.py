"""The one place that reaches under aiomqtt 2.5: manual acks, paused and buffered reads.

aiomqtt 2.5 acknowledges every message as soon as paho hands it over (its issue
#345); we must acknowledge only after what a message produced is committed, so that
a crash makes the broker redeliver instead of losing it. paho-mqtt 2.x supports that
(``manual_ack_set`` / ``ack``) on the client aiomqtt wraps. aiomqtt 3 has a native
``puback`` and its own flow control: replacing this module is the whole migration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Final

import aiomqtt
import paho.mqtt.client as paho

from agent.domain import MessageRef


class ManualAcks:
    """Sends PUBACKs for one connection (``session``) of ``client``.

    Create it before the client connects: paho only honours manual acks for messages
    it receives after the switch, and a persistent session may redeliver as soon as
    CONNACK arrives.
    """

    __slots__ = ("_paho", "session", "stale")

    def __init__(self, client: aiomqtt.Client, session: int) -> None:
        self._paho: paho.Client = client._client  # the reach-under: see the module docstring
        self._paho.manual_ack_set(True)
        self.session = session
        #: Refs of older sessions skipped so far; the broker redelivers those messages.
        self.stale = 0

    def ack(self, refs: Iterable[MessageRef]) -> int:
        """Acknowledge QoS 1 refs of this session; return how many PUBACKs were sent.

        A message id only means something on the connection it arrived on (ids are
        reused), so refs of any other session are counted in ``stale`` and skipped.
        """
        sent = 0
        session = self.session
        ack = self._paho.ack
        for ref in refs:
            if ref.qos == 0:
                continue
            if ref.session != session:
                self.stale += 1
                continue
            if ack(ref.mid, ref.qos) == paho.MQTT_ERR_SUCCESS:
                sent += 1
        return sent


#: Bytes taken from the kernel per read: ~300 single-reading messages.
READ_CHUNK: Final = 65536
#: Kernel reads per event-loop turn. More buffered bytes wait for the next turn, so
#: that the pipeline runs (and can pause reading) between chunks.
READS_PER_TURN: Final = 2


class BufferedSocket:
    """The broker socket as paho sees it, read in chunks.

    paho reads a packet with three or more ``recv`` calls (its type byte, its
    length one byte at a time, then its body): a system call per header byte. This
    serves them from one large read. ``pending()`` counts the bytes buffered here
    (and in a TLS socket's own buffer); ``reads`` counts kernel reads. Everything
    else is the socket's.
    """

    __slots__ = ("_buf", "_pos", "_sock", "reads")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0
        self.reads = 0

    def recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._buf):
            # Raises what the socket raises (BlockingIOError, SSLWantReadError),
            # which paho handles; b"" is the broker closing the connection.
            self._buf = self._sock.recv(max(bufsize, READ_CHUNK))
            self._pos = 0
            self.reads += 1
        start = self._pos
        self._pos = min(start + bufsize, len(self._buf))
        return self._buf[start : self._pos]

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buf) - self._pos + int(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class SocketReads:
    """Reads the broker's socket in place of aiomqtt's reader; pauses and resumes.

    - Buffered: :class:`BufferedSocket` under paho, and one callback turn handles
      every message of up to ``READS_PER_TURN`` chunks instead of one message.
      Bytes already buffered never make the socket readable again, so the callback
      schedules itself for the next turn while any are left.
    - Paused: Mosquitto 2.0 sends well beyond the Receive Maximum we announce when
      acks come after commits, and aiomqtt queues every message it reads without
      bound. While paused, TCP flow control keeps the messages at the broker.

    aiomqtt 3's own reader and flow control make this unnecessary.
    """

    __slots__ = ("_client", "_fd", "_loop", "_sock", "paused")

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._fd: int | None = None
        self._sock: BufferedSocket | None = None
        self.paused = False

    def take_over(self) -> bool:
        """Buffer the connected client's socket and read it here; False if not connected."""
        inner = self._client._client
        sock = inner._sock
        if sock is None:
            return False
        if not isinstance(sock, BufferedSocket):
            sock = BufferedSocket(sock)
            inner._sock = sock
        self._sock = sock
        self._fd = sock.fileno()
        if not self.paused:
            self._loop.add_reader(self._fd, self._read)  # replaces aiomqtt's reader
        return True

    def backlog(self) -> int:
        """Messages aiomqtt has read but not yet handed over."""
        return self._client._queue.qsize()

    def pause(self) -> None:
        if self.paused:
            return
        sock = self._client._client.socket()
        if sock is None:
            return
        self._fd = sock.fileno()
        self.paused = self._loop.remove_reader(self._fd)

    def resume(self) -> None:
        if not self.paused or self._fd is None:
            return
        self.paused = False
        sock = self._client._client.socket()
        if sock is None or sock.fileno() != self._fd:
            # The connection closed while paused: its descriptor number may belong to
            # anything by now (the next connection, the database file).
            return
        self._loop.add_reader(self._fd, self._read)
        self._read()  # bytes that arrived while paused do not signal readiness again

    def _read(self) -> None:
        # Like aiomqtt's own reader callback, a failed read means the connection
        # broke, which aiomqtt learns through its disconnected future.
        if self.paused:
            return  # a turn scheduled before pause()
        client = self._client
        inner = client._client
        try:
            inner.loop_read()
            sock = self._sock
            # id(): an `is` test against paho's socket type would narrow `sock` away.
            if sock is None or id(inner._sock) != id(sock):
                return  # not taken over, or the connection closed
            first = sock.reads
            while not self.paused and sock.pending() and sock.reads - first < READS_PER_TURN:
                inner.loop_read()
            if not self.paused and sock.pending():
                self._loop.call_soon(self._read)
        except Exception as exc:
            if not client._disconnected.done():
                client._disconnected.set_exception(exc)
