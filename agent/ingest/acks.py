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


class BufferedSocket:
    """The broker socket as paho sees it, read in chunks.

    paho reads a packet with three or more ``recv`` calls (its type byte, its
    length one byte at a time, then its body) and one packet per readiness
    callback: a system call per byte of header and an event-loop turn per message.
    This serves those calls from one large read. ``pending()`` counts what is
    buffered, and aiomqtt's reader callback (like :meth:`SocketReads._read`) keeps
    reading while it is non-zero, as it does for TLS sockets, so nothing buffered
    waits for the kernel to signal readiness again. Everything else is the socket's.
    """

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._buf):
            # Raises what the socket raises (BlockingIOError, SSLWantReadError),
            # which paho handles; b"" is the broker closing the connection.
            self._buf = self._sock.recv(max(bufsize, READ_CHUNK))
            self._pos = 0
        start = self._pos
        self._pos = min(start + bufsize, len(self._buf))
        return self._buf[start : self._pos]

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buf) - self._pos + int(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def buffer_reads(client: aiomqtt.Client) -> bool:
    """Put :class:`BufferedSocket` under the connected client; False if not connected."""
    inner = client._client
    sock = inner._sock
    if sock is None:
        return False
    if not isinstance(sock, BufferedSocket):
        inner._sock = BufferedSocket(sock)
    return True


class SocketReads:
    """Pauses and resumes reading the broker's socket (the other reach-under).

    Mosquitto 2.0 sends well beyond the Receive Maximum we announce when acks come
    after commits. aiomqtt reads the socket whenever data is there and queues every
    message without bound, so a flood fills memory faster than the pipeline drains
    it. While paused, TCP flow control keeps the messages at the broker instead.
    aiomqtt 3's own flow control makes this unnecessary.
    """

    __slots__ = ("_client", "_fd", "_loop", "paused")

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._fd: int | None = None
        self.paused = False

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
        self._loop.add_reader(self._fd, self._read)
        self._read()  # bytes that arrived while paused do not signal readiness again

    def _read(self) -> None:
        # What aiomqtt's own reader callback does: read while bytes are pending (in
        # TLS or BufferedSocket buffers); a failed read means the connection broke,
        # which aiomqtt learns through its disconnected future.
        client = self._client
        inner = client._client
        try:
            inner.loop_read()
            while not self.paused and isinstance(sock := inner._sock, BufferedSocket):
                if not sock.pending():
                    break
                inner.loop_read()
        except Exception as exc:
            if not client._disconnected.done():
                client._disconnected.set_exception(exc)
