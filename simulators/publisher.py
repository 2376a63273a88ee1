"""Publishing to MQTT without losing QoS 1 messages: the common interface.

Two backends share it: :class:`simulators.mqtt_wire.WirePublisher` (default, QoS 0/1,
fastest) and :class:`simulators.paho_publisher.PahoPublisher` (QoS 0/1/2). Both bound
the unacknowledged publishes, wait for every acknowledgement before they report,
reconnect and resend after a connection loss, and give up (reporting what was not
acknowledged) when the broker stays away longer than ``reconnect_timeout_s``.

Usage::

    with make_publisher("127.0.0.1", 1883, qos=1) as pub:
        for seq, (topic, payload) in enumerate(messages):
            pub.publish(seq, topic, payload)
    result = pub.result  # PublishResult: sent, rate, errors, unacked sequence numbers
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from agent.errors import BrokerError

DEFAULT_MAX_INFLIGHT = 2000
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_RECONNECT_TIMEOUT_S = 30.0
DEFAULT_DRAIN_TIMEOUT_S = 60.0
#: Keep at most this many unacknowledged sequence numbers in a result.
MAX_REPORTED_SEQS = 10_000


def parse_broker_url(url: str, *, default_port: int = 1883) -> tuple[str, int]:
    """``mqtt://host:port``, ``tcp://host``, ``host:port`` or ``host`` -> (host, port)."""
    text = url.strip()
    if "://" not in text:
        text = "mqtt://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("mqtt", "tcp"):
        raise BrokerError(
            f"unsupported broker URL {url!r}", hint="use mqtt://host:port (TLS is not supported)"
        )
    try:
        port = parts.port or default_port
    except ValueError:
        raise BrokerError(f"invalid port in broker URL {url!r}") from None
    if not parts.hostname:
        raise BrokerError(f"no host in broker URL {url!r}", hint="use mqtt://host:port")
    return parts.hostname, port


@dataclass
class PublishResult:
    """What a publisher achieved. ``sent`` counts acknowledged messages (QoS 1/2) or
    messages written to the socket (QoS 0); ``not_sent`` is everything else."""

    attempted: int = 0
    sent: int = 0
    readings_sent: int = 0
    elapsed_s: float = 0.0
    disconnects: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)
    unacked_seqs: list[int] = field(default_factory=list)

    @property
    def not_sent(self) -> int:
        return self.attempted - self.sent

    @property
    def rate_msg_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def rate_readings_s(self) -> float:
        return self.readings_sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.not_sent == 0 and not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "sent": self.sent,
            "not_sent": self.not_sent,
            "readings_sent": self.readings_sent,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_msg_s": round(self.rate_msg_s, 1),
            "rate_readings_s": round(self.rate_readings_s, 1),
            "disconnects": self.disconnects,
            "reconnects": self.reconnects,
            "errors": list(self.errors),
            "unacked_seqs": list(self.unacked_seqs),
        }


class MessageSink(Protocol):
    """Where a stream's messages go: the MQTT publisher, or a list in tests."""

    def publish(self, seq: int, topic: str, payload: bytes, readings: int = 1) -> bool: ...

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Pass ``seconds`` (pacing) doing the sink's housekeeping; True if stopped."""
        ...


class Publisher(MessageSink, Protocol):
    """A connected message sink with a lifecycle and a final result."""

    result: PublishResult

    def connect(self) -> None: ...

    def flush(self, timeout_s: float | None = None) -> bool: ...

    def close(self) -> PublishResult: ...

    def __enter__(self) -> Publisher: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


Backend = Literal["auto", "wire", "paho"]


def make_publisher(
    host: str,
    port: int,
    *,
    qos: int = 1,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    username: str | None = None,
    password: str | None = None,
    reconnect_timeout_s: float = DEFAULT_RECONNECT_TIMEOUT_S,
    backend: Backend = "auto",
) -> Publisher:
    """A publisher for ``host:port``: the wire backend unless QoS 2 or asked for paho."""
    # Imported here: both backends import this module for the shared types.
    from simulators.mqtt_wire import WirePublisher
    from simulators.paho_publisher import PahoPublisher

    if backend == "paho" or (backend == "auto" and qos == 2):
        return PahoPublisher(
            host,
            port,
            qos=qos,
            max_inflight=max_inflight,
            username=username,
            password=password,
            reconnect_timeout_s=reconnect_timeout_s,
        )
    return WirePublisher(
        host,
        port,
        qos=qos,
        max_inflight=max_inflight,
        username=username,
        password=password,
        reconnect_timeout_s=reconnect_timeout_s,
    )
