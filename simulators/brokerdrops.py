"""What the broker dropped while a run published: its ``$SYS`` drop counter.

A broker acknowledges a QoS 1 publish when it has taken it, not when every subscriber
has: Mosquitto queues at most ``max_queued_messages`` (1000 by default) for a
subscriber that cannot keep up and drops the rest, silently for the publisher. A run
published flat out at an agent that scores slower than it publishes loses messages
that way. Mosquitto counts them in ``$SYS/broker/publish/messages/dropped`` and
publishes that count every ``sys_interval`` seconds (10 by default), with its uptime:
a count read after an uptime update that came after the run covers the whole run.

The count is the broker's, for all its clients: drops of another subscriber during
the run are counted too. A broker without ``$SYS`` (or that hides it) gives no count.
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
UPTIME_TOPIC = "$SYS/broker/uptime"
#: How long connecting and subscribing may take at most.
FIRST_COUNT_S = 5.0
#: The count is retained: a broker with $SYS sends it right behind the SUBACK, so one
#: that has sent nothing this long after the SUBACK has no count to give.
RETAINED_GRACE_S = 2.0
#: After the uptime update, the counts of the same ``$SYS`` pass still on their way.
SAME_PASS_S = 0.5


class DropWatch:
    """Watches the broker's drop counter from before a run until after it."""

    def __init__(
        self, host: str, port: int, username: str | None = None, password: str | None = None
    ) -> None:
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="")
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._first: int | None = None
        self._latest: int | None = None
        self._uptime_at = 0.0
        self._subscribed_at: float | None = None
        self._changed = threading.Condition(self._lock)

    def __enter__(self) -> DropWatch:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        return self

    def __exit__(self, *_: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe([(DROPPED_TOPIC, 0), (UPTIME_TOPIC, 0)])

    def _on_subscribe(self, *_: object) -> None:
        with self._changed:
            self._subscribed_at = time.monotonic()
            self._changed.notify_all()

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._changed:
            if msg.topic == UPTIME_TOPIC:
                self._uptime_at = time.monotonic()
            else:
                try:
                    count = int(msg.payload)
                except ValueError:
                    return
                if self._first is None:
                    self._first = count
                self._latest = count
            self._changed.notify_all()

    def wait_started(self, timeout_s: float = FIRST_COUNT_S) -> bool:
        """Until the broker's count before the run is known; False if it gives none
        (nothing right behind the SUBACK) or could not be asked within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._first is None:
                # Until the deadline, or the grace after the SUBACK once it has come
                # (the SUBACK wakes this wait, so the limit is worked out again).
                subscribed = self._subscribed_at
                limit = (
                    deadline if subscribed is None else min(deadline, subscribed + RETAINED_GRACE_S)
                )
                left = limit - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def dropped(self, timeout_s: float) -> int | None:
        """Messages the broker dropped since the watch began, once ``$SYS`` has been
        published again after this call (waiting at most ``timeout_s``); None when the
        broker gave no count or did not publish again in time."""
        asked = time.monotonic()
        with self._changed:
            if self._first is None:
                return None
            if not self._changed.wait_for(lambda: self._uptime_at > asked, timeout_s):
                return None
        time.sleep(SAME_PASS_S)  # the rest of the same pass, sent right behind it
        with self._lock:
            assert self._first is not None and self._latest is not None
            return self._latest - self._first
