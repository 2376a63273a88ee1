"""Shared pieces of the ingest tests: settings for a test broker, observer clients."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiomqtt
import orjson

from agent.settings import Settings

WAIT_S = 10.0


class Address(Protocol):
    """Where a broker listens (the test fixtures' brokers have more)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_settings(
    broker: Address,
    *,
    site: str,
    agent: str = "gw",
    ingest: dict[str, Any] | None = None,
    **mqtt: Any,
) -> Settings:
    """Settings for one test: its own site and client id, fast reconnects."""
    section: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "client_id": unique("edgewatch-test"),
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
    }
    section.update(mqtt)
    return Settings.model_validate(
        {"identity": {"site": site, "agent": agent}, "mqtt": section, "ingest": ingest or {}}
    )


@asynccontextmanager
async def observer(broker: Address, *topics: str) -> AsyncIterator[aiomqtt.Client]:
    """A plain client, subscribed at QoS 1 before the block runs."""
    async with aiomqtt.Client(broker.host, broker.port, identifier=unique("observer")) as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        yield client


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async for message in client.messages:
        return message
    raise AssertionError("message stream ended")


def body(message: aiomqtt.Message) -> Any:
    assert isinstance(message.payload, bytes)
    return orjson.loads(message.payload)
