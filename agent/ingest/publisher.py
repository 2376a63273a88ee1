"""What the agent publishes: status (birth, health, offline) and alert state.

Publishing goes through anything with the :class:`Publishes` shape (the
:class:`~agent.ingest.link.MqttLink` in production), so this module never imports the
link and the link can use the status payloads for its birth message and Last Will.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson

from agent.domain import Alert
from agent.logs import fields

from .topics import format_topic

log = logging.getLogger(__name__)

ALERT_QOS: Final = 1
_MS_PER_S: Final = 1000


class Publishes(Protocol):
    """The part of the MQTT link publishers need."""

    @property
    def connected(self) -> bool: ...

    async def wait_connected(self, timeout_s: float | None = None) -> bool: ...

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float | None = None,
    ) -> bool: ...


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_utc(ms: int) -> str:
    """``2026-11-23T20:30:00.123Z``: ISO 8601 in UTC, millisecond precision."""
    stamp = datetime.fromtimestamp(ms / _MS_PER_S, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def publish_json(
    link: Publishes,
    topic: str,
    obj: Any,
    *,
    qos: int = 1,
    retain: bool = False,
    timeout_s: float | None = None,
) -> bool:
    """Publish ``obj`` as compact JSON; False when it could not be delivered in time."""
    payload = orjson.dumps(obj, default=str)
    return await link.publish(topic, payload, qos=qos, retain=retain, timeout_s=timeout_s)


class StatusReporter:
    """Payloads of the status topic: birth, periodic health and offline (also the Will).

    All are JSON objects with ``state`` first, so a dashboard can key on one field
    whichever message it sees last.
    """

    def __init__(self, *, site: str, agent: str, client_id: str, topic: str) -> None:
        self.site = site
        self.agent = agent
        self.client_id = client_id
        self.topic = topic
        self.started_ms = now_ms()

    def _base(self, state: str, ts_ms: int) -> dict[str, Any]:
        return {
            "state": state,
            "site": self.site,
            "agent": self.agent,
            "client_id": self.client_id,
            "ts": ts_ms / _MS_PER_S,
            "time": iso_utc(ts_ms),
        }

    def birth(self, **extra: Any) -> bytes:
        body = self._base("online", now_ms())
        body["started"] = iso_utc(self.started_ms)
        body.update(extra)
        return orjson.dumps(body, default=str)

    def offline(self, reason: str) -> bytes:
        """``reason``: "shutdown" on a clean stop, "connection lost" in the Last Will."""
        body = self._base("offline", now_ms())
        body["reason"] = reason
        return orjson.dumps(body)

    def will(self) -> bytes:
        """The Last Will: sent by the broker when the connection dies without DISCONNECT.

        Fixed when connecting, so it carries the connect time, not the time of death.
        """
        body = self._base("offline", now_ms())
        body["reason"] = "connection lost"
        body["connected_ts"] = body.pop("ts")
        body["connected_at"] = body.pop("time")
        return orjson.dumps(body)

    def health(self, snapshot: dict[str, Any], **extra: Any) -> bytes:
        """Health message from ``metrics.snapshot()`` plus what the runtime adds."""
        body = self._base("online", now_ms())
        body.update(snapshot)
        body.update(extra)
        return orjson.dumps(body, default=str)

    async def publish_health(self, link: Publishes, snapshot: dict[str, Any], **extra: Any) -> bool:
        # Retained, so that whoever subscribes later sees the latest health at once.
        payload = self.health(snapshot, **extra)
        return await link.publish(self.topic, payload, qos=1, retain=True)


def alert_payload(alert: Alert, site: str) -> dict[str, Any]:
    """The JSON body of an alert message; times in epoch seconds and ISO 8601."""

    def times(ms: int | None) -> tuple[float | None, str | None]:
        return (None, None) if ms is None else (ms / _MS_PER_S, iso_utc(ms))

    opened_ts, opened_at = times(alert.opened_ms)
    closed_ts, closed_at = times(alert.closed_ms)
    updated_ts, updated_at = times(alert.last_update_ms or alert.opened_ms)
    return {
        "site": site,
        "asset": alert.asset,
        "kind": str(alert.kind),
        "severity": str(alert.severity),
        "state": "open" if alert.is_open else "closed",
        "opened_ts": opened_ts,
        "opened_at": opened_at,
        "closed_ts": closed_ts,
        "closed_at": closed_at,
        "updated_ts": updated_ts,
        "updated_at": updated_at,
        "peak_score": alert.peak_score,
        "last_score": alert.last_score,
        "rul": alert.rul_cycles,
        "model_version": alert.model_version,
        "detail": alert.detail,
    }


class AlertPublisher:
    """Publishes each alert state as retained JSON at QoS 1 on the asset's alert topic.

    The inbox is drained continuously even while the broker is away, so alerting
    never stalls the pipeline; unsent states are kept per (asset, kind), newest
    only, and published on reconnect. Alerts are stored in SQLite regardless; MQTT
    carries the current state, which a newer one supersedes.

    ``inbox.task_done()`` follows each alert once it is published or superseded, so
    ``await inbox.join()`` at shutdown waits until the current states are out.
    """

    def __init__(
        self,
        link: Publishes,
        template: str,
        site: str,
        inbox: asyncio.Queue[Alert],
        *,
        publish_timeout_s: float | None = None,
    ) -> None:
        self._link = link
        self._template = template
        self._site = site
        self._inbox = inbox
        self._timeout_s = publish_timeout_s
        self._pending: dict[tuple[str, str], Alert] = {}
        self.published = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def topic_for(self, asset: str) -> str:
        return format_topic(self._template, site=self._site, asset=asset)

    async def run(self) -> None:
        while True:
            self._take_waiting()
            if not self._pending:
                self._keep(await self._inbox.get())
                continue
            if not self._link.connected:
                await self._wait_inbox_or_link()
                continue
            key, alert = next(iter(self._pending.items()))
            sent = await self._publish(alert)
            if sent and self._pending.get(key) is alert:
                del self._pending[key]
                self._inbox.task_done()

    async def _publish(self, alert: Alert) -> bool:
        try:
            topic = self.topic_for(alert.asset)
        except ValueError as exc:
            # An asset name that cannot be a topic level came from upstream; publishing
            # it anywhere else would be wrong, retrying forever pointless.
            log.warning("alert not published", extra=fields(asset=alert.asset, error=str(exc)))
            return True
        body = orjson.dumps(alert_payload(alert, self._site))
        sent = await self._link.publish(
            topic, body, qos=ALERT_QOS, retain=True, timeout_s=self._timeout_s
        )
        if sent:
            self.published += 1
        return sent

    def _keep(self, alert: Alert) -> None:
        key = (alert.asset, str(alert.kind))
        # Re-inserting moves the key last, so states go out in the order they came.
        if self._pending.pop(key, None) is not None:
            self._inbox.task_done()  # superseded: its newer state is what counts
        self._pending[key] = alert

    def _take_waiting(self) -> None:
        while True:
            try:
                alert = self._inbox.get_nowait()
            except asyncio.QueueEmpty:
                return
            self._keep(alert)

    async def _wait_inbox_or_link(self) -> None:
        getter = asyncio.ensure_future(self._inbox.get())
        linker = asyncio.ensure_future(self._link.wait_connected())
        try:
            await asyncio.wait((getter, linker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            linker.cancel()
            if getter.done() and not getter.cancelled():
                self._keep(getter.result())
            else:
                getter.cancel()
