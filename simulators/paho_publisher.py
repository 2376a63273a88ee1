"""MQTT publisher over paho, driven from the calling thread (QoS 0, 1 and 2).

:class:`simulators.mqtt_wire.WirePublisher` is the default and faster; this backend
exists for QoS 2 and as a reference implementation on a well-known client. paho's
external-loop interface (``loop_read``/``loop_write``/``loop_misc``) is driven from the
publishing thread: measured here, paho's threaded client reached about 6,000 msg/s at
QoS 1 because of GIL hand-offs and a lock per message, this way about 15,000-20,000.
Unacknowledged publishes are bounded because paho's 16-bit message ids wrap: an
unbounded publisher loses messages past 65,535 in flight.
"""

from __future__ import annotations

import itertools
import select
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from agent.errors import BrokerError
from simulators.publisher import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_RECONNECT_TIMEOUT_S,
    MAX_REPORTED_SEQS,
    PublishResult,
)

#: How often a blocked publish wakes up to check the connection; not a sync point.
_WAIT_SLICE_S = 0.25
#: Publishes between two non-blocking reads of acknowledgements.
_SERVICE_EVERY = 32
#: Keep-alive bookkeeping interval (paho's loop_misc).
_MISC_INTERVAL_S = 1.0
#: Pause between reconnect attempts while the broker is away.
_RECONNECT_BACKOFF_S = 0.5
_client_ids = itertools.count()


class PahoPublisher:
    """Bounded-in-flight publisher driving paho from the calling thread.

    No network thread: the caller's thread writes publishes and reads acknowledgements
    through paho's external-loop interface (``loop_read``/``loop_write``/``loop_misc``).
    One thread means no GIL hand-offs and no lock per message, several times faster
    than ``loop_start()`` here. Call :meth:`wait` instead of sleeping between
    messages so that keep-alives and acknowledgements keep flowing.
    """

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
        will: tuple[str, bytes] | None = None,
        subscriptions: Sequence[str] = (),
        on_message: Callable[[str, bytes], None] | None = None,
    ) -> None:
        """``will`` (topic, payload) is the QoS 1 Last Will; ``subscriptions`` are
        subscribed at every connect and their messages passed to ``on_message`` from
        inside :meth:`publish`, :meth:`wait` and :meth:`flush`."""
        if qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
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
        self._in_flight = 0
        self._pending: dict[int, tuple[int, int]] = {}  # mid -> (seq, readings)
        self._early: set[int] = set()  # acks delivered inside publish() itself
        self._connected = False
        self._ever_connected = False
        self._down_since: float | None = None
        self._connect_error: str | None = None
        self._gave_up = False
        self._started = 0.0
        self._closed = False
        self._since_service = 0
        self._next_misc = 0.0
        cid = client_id or f"edgewatch-sim-{int(time.time() * 1000) % 10**9}-{next(_client_ids)}"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cid,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=True,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1)
        self._subscriptions = tuple(subscriptions)
        if on_message is not None:
            handler = on_message
            self._client.on_message = lambda _c, _u, message: handler(
                message.topic, bytes(message.payload)
            )

    # -- paho callbacks (called from inside our own loop calls) ---------------------

    def _on_connect(
        self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any = None
    ) -> None:
        if getattr(reason, "is_failure", False):
            self._connect_error = str(reason)
            return
        if self._ever_connected:
            self.result.reconnects += 1
        self._ever_connected = True
        self._connected = True
        self._down_since = None
        for topic in self._subscriptions:
            self._client.subscribe(topic, qos=1)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _flags: Any, _reason: Any, _props: Any = None
    ) -> None:
        self._lost()

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, mid: int, _reason: Any = None, _props: Any = None
    ) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None:
            self._early.add(mid)
        else:
            self.result.readings_sent += entry[1]
        self.result.sent += 1
        self._in_flight -= 1

    def _lost(self) -> None:
        if self._connected and not self._closed:
            # Not an error by itself: we reconnect and paho resends what was in flight.
            self.result.disconnects += 1
        self._connected = False
        if self._down_since is None:
            self._down_since = time.monotonic()

    # -- the loop ------------------------------------------------------------------

    def _service(self, timeout_s: float) -> None:
        """Read acknowledgements, flush writes, keep alive; reconnect when down."""
        sock = self._client.socket()
        if sock is None:
            # paho closes the socket whenever the connection fails.
            self._lost()
            self._try_reconnect(timeout_s)
            return
        wlist = [sock] if self._client.want_write() else []
        try:
            readable, writable, _ = select.select([sock], wlist, [], timeout_s)
        except (OSError, ValueError):
            self._lost()
            return
        if readable and self._client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lost()
            return
        if writable and self._client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lost()
            return
        now = time.monotonic()
        if now >= self._next_misc:
            self._next_misc = now + _MISC_INTERVAL_S
            if self._client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lost()

    def _try_reconnect(self, timeout_s: float) -> None:
        if self._closed:
            return
        if self._offline_too_long():
            self._gave_up = True
            return
        try:
            # Sends CONNECT; our on_connect runs when the CONNACK is read. paho then
            # resends every unacknowledged QoS 1 message.
            self._client.reconnect()
        except OSError:
            # The broker is still away: back off, bounded by the caller's wait.
            time.sleep(min(max(timeout_s, 0.0), _RECONNECT_BACKOFF_S))

    # -- lifecycle -----------------------------------------------------------------

    def connect(self) -> None:
        """Connect and wait for the broker's CONNACK; raises BrokerError if unreachable."""
        where = f"{self.host}:{self.port}"
        try:
            self._client.connect(self.host, self.port, keepalive=self.keepalive_s)
        except OSError as exc:
            raise BrokerError(
                f"cannot reach MQTT broker at {where}: {exc.strerror or exc}",
                hint="start mosquitto or pass --broker",
            ) from None
        deadline = time.monotonic() + self.connect_timeout_s
        while not self._connected and self._connect_error is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._client.socket() is None:
                break
            self._service(min(remaining, _WAIT_SLICE_S))
        if not self._connected:
            self._client.disconnect()
            detail = self._connect_error or f"no answer within {self.connect_timeout_s:g}s"
            raise BrokerError(
                f"MQTT broker at {where} refused the connection: {detail}",
                hint="check the broker address and its access rules",
            )
        self._started = time.monotonic()

    def __enter__(self) -> PahoPublisher:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def publish(self, seq: int, topic: str, payload: bytes, readings: int = 1) -> bool:
        """Send one message; blocks while ``max_inflight`` are unacknowledged.

        Returns False if the message was not queued (the publisher gave up on the
        broker or paho refused it); the result records why.
        """
        self.result.attempted += 1
        if self.result.attempted == 1:
            # The rate covers publishing, not connecting or preparing the data.
            self._started = time.monotonic()
        while self._in_flight >= self.max_inflight or not self._connected:
            if self._gave_up:
                return False
            self._service(_WAIT_SLICE_S)
        self._in_flight += 1
        info = self._client.publish(topic, payload, qos=self.qos)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            if info.rc == MQTTErrorCode.MQTT_ERR_CONN_LOST:
                # paho keeps the message and resends it after the reconnect.
                self._lost()
            else:
                self._in_flight -= 1
                self.result.errors.append(f"seq {seq}: {mqtt.error_string(info.rc)}")
                return False
        if info.mid in self._early:
            self._early.discard(info.mid)
            self.result.readings_sent += readings
        else:
            self._pending[info.mid] = (seq, readings)
        self._since_service += 1
        if self._since_service >= _SERVICE_EVERY:
            self._since_service = 0
            self._service(0.0)
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

    def _offline_too_long(self) -> bool:
        down = self._down_since
        return down is not None and time.monotonic() - down > self.reconnect_timeout_s

    @property
    def gave_up(self) -> bool:
        return self._gave_up

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued message is acknowledged; False on timeout/give-up."""
        deadline = time.monotonic() + (self.drain_timeout_s if timeout_s is None else timeout_s)
        while self._in_flight > 0:
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
        if not drained and self._in_flight:
            self.result.errors.append(f"{self._in_flight} message(s) not acknowledged")
        self.result.unacked_seqs = sorted(s for s, _ in self._pending.values())[:MAX_REPORTED_SEQS]
        self.result.elapsed_s = time.monotonic() - self._started if self._started else 0.0
        # paho writes DISCONNECT at once (no network thread) and closes the socket.
        self._client.disconnect()
        return self.result
