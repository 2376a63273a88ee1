"""The benchmark's baseline: a bare aiomqtt + orjson receive loop doing nothing else.

Run as ``python -m agent.benchprobe HOST PORT FILTER COUNT QOS PROTOCOL`` in its own process
(like the agent); prints ``ready`` once subscribed, then one JSON line with the
number of messages and the times of the first and the last.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiomqtt
import orjson
from aiomqtt.client import ProtocolVersion

#: The probe gives up when nothing arrives for this long.
IDLE_TIMEOUT_S = 30.0


async def receive(
    host: str, port: int, topic_filter: str, count: int, qos: int, protocol: str
) -> dict[str, float]:
    received = 0
    first = last = 0.0
    version = ProtocolVersion.V311 if protocol == "3.1.1" else ProtocolVersion.V5
    async with aiomqtt.Client(
        host, port, identifier="edgewatch-bench-probe", protocol=version
    ) as client:
        await client.subscribe(topic_filter, qos=qos)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        messages = aiter(client.messages)
        while received < count:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT_S):
                    message = await anext(messages)
            except TimeoutError:
                break
            payload = message.payload
            if isinstance(payload, bytes):
                orjson.loads(payload)  # the same decode work the agent must do at least
            last = time.monotonic()
            if received == 0:
                first = last
            received += 1
    return {"received": received, "first": first, "last": last}


def main() -> None:
    host, port, topic_filter, count, qos, protocol = sys.argv[1:7]
    result = asyncio.run(receive(host, int(port), topic_filter, int(count), int(qos), protocol))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
