"""Sparkplug B out: the agent's per-asset results published as one edge node.

It has its own MQTT connection, because its NDEATH must be that connection's Will.
Callers hand it values with :meth:`SparkplugPublisher.offer`, which never waits: the
latest values of each asset wait in a bounded map (Sparkplug data is QoS 0, so a slow
broker gets the newest values, not every value), and what is pushed out is counted.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping

import aiomqtt

from agent import sparkplug as sp
from agent.domain import Alert, Prediction
from agent.publish.sparkplug_node import EdgeNode, Value

_BACKOFF_MAX_S = 30.0


def result_values(item: Prediction | Alert) -> dict[str, Value | None]:
    """The metrics a prediction or an alert sets on its asset's device."""
    if isinstance(item, Alert):
        active = item.closed_ms is None
        return {"Alert/active": active, "Alert/severity": item.severity.value if active else ""}
    values: dict[str, Value | None] = {
        "anomaly_score": item.anomaly_score,
        "anomaly_threshold": item.anomaly_threshold,
        "is_anomaly": item.is_anomaly,
    }
    if item.rul_cycles is not None:
        values["rul_cycles"] = item.rul_cycles
    if item.rul_low is not None:
        values["rul_low"] = item.rul_low
    if item.rul_high is not None:
        values["rul_high"] = item.rul_high
    return values


def _now_ms() -> int:
    return int(time.time() * 1000)


class SparkplugPublisher:
    def __init__(
        self,
        host: str,
        port: int,
        group: str,
        node: str,
        *,
        max_pending: int = 1000,
        bdseq: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        # A new bdSeq per start: the broker may still hold the previous run's Will.
        self.node = EdgeNode(group, node, bdseq=_now_ms() if bdseq is None else bdseq)
        self.max_pending = max_pending
        self.dropped = 0
        self.published = 0
        self.sessions = 0
        self._pending: OrderedDict[str, dict[str, Value | None]] = OrderedDict()
        self._wake = asyncio.Event()

    def offer(self, asset: str, values: Mapping[str, Value | None]) -> None:
        """Queue an asset's new values; merges with its unsent ones, drops the oldest asset's."""
        waiting = self._pending.get(asset)
        if waiting is not None:
            waiting.update(values)
            self._pending.move_to_end(asset)
        else:
            if len(self._pending) >= self.max_pending:
                self._pending.popitem(last=False)
                self.dropped += 1
            self._pending[asset] = dict(values)
        self._wake.set()

    def offer_result(self, item: Prediction | Alert) -> None:
        self.offer(item.asset, result_values(item))

    async def run(self) -> None:
        """Publish until cancelled, reconnecting with capped backoff; NDEATH on the way out."""
        backoff = 0.5
        first = True
        while True:
            if not first:
                self.node.new_session()
            first = False
            topic, will = self.node.will(_now_ms())
            client = aiomqtt.Client(
                self.host,
                self.port,
                identifier=f"edgewatch-spb-{self.node.group}-{self.node.node}"[:64],
                will=aiomqtt.Will(topic=topic, payload=will, qos=1, retain=False),
            )
            try:
                async with client:
                    backoff = 0.5
                    await self._session(client)
            except aiomqtt.MqttError:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.subscribe(
            sp.topic(self.node.group, sp.MessageType.NCMD, self.node.node), qos=0
        )
        await self._send(client, self.node.births(_now_ms()))
        self.sessions += 1
        commands = asyncio.create_task(self._commands(client))
        try:
            while True:
                if commands.done():
                    commands.result()
                await self._drain(client)
                self._wake.clear()
                if not self._pending:
                    waiter = asyncio.create_task(self._wake.wait())
                    try:
                        await asyncio.wait({commands, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
        except asyncio.CancelledError:
            topic, death = self.node.will(_now_ms())
            await asyncio.shield(client.publish(topic, death, qos=0))
            raise
        finally:
            commands.cancel()

    async def _drain(self, client: aiomqtt.Client) -> None:
        while self._pending:
            asset, values = self._pending.popitem(last=False)
            await self._send(client, self.node.update(asset, values, _now_ms()))

    async def _commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if not isinstance(message.payload, bytes):
                continue
            try:
                payload = sp.decode(message.payload)
            except ValueError:
                continue
            if sp.is_rebirth_command(payload):
                await self._send(client, self.node.births(_now_ms()))

    async def _send(self, client: aiomqtt.Client, messages: list[tuple[str, bytes]]) -> None:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=0)
            self.published += 1
