"""The private parts of aiomqtt and paho that ``agent/ingest/acks.py`` relies on.

acks.py reaches under aiomqtt 2.5 (see its docstring). Each attribute it touches is
checked here against the installed libraries, on a real connection, so that an
upgrade which renames or retypes one fails this test instead of a gateway. The
versions pyproject.toml allows are pinned to the ones checked; the last test keeps
this list and acks.py in step.
"""

from __future__ import annotations

import ast
import asyncio
import tomllib
from importlib.metadata import version
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
from packaging.requirements import Requirement

from agent.ingest import acks
from agent.ingest.acks import BufferedSocket, SocketReads
from tests.agent.ingest.helpers import WAIT_S, next_message, unique
from tests.support import Broker

ROOT = Path(__file__).resolve().parents[3]

#: Every private attribute acks.py uses, on which object.
PRIVATE = {
    "_client": "aiomqtt.Client: the paho client it wraps",
    "_sock": "paho.Client: the connected socket, read and replaced",
    "_queue": "aiomqtt.Client: the asyncio.Queue of messages read, not yet handed over",
    "_disconnected": "aiomqtt.Client: the future a broken connection is reported through",
}


def test_installed_aiomqtt_and_paho_are_within_the_pinned_ranges() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {r.name: r for r in map(Requirement, project["dependencies"])}
    for name in ("aiomqtt", "paho-mqtt"):
        spec = pins[name].specifier
        # A pin with an upper bound: the next minor release is not taken blindly.
        assert any(s.operator in ("<", "<=", "==", "~=") for s in spec), (name, spec)
        assert spec.contains(version(name)), (name, version(name), spec)


async def test_the_wrapped_paho_client_is_there_before_connecting() -> None:
    # ManualAcks switches paho to manual acks before the client connects.
    client = aiomqtt.Client("127.0.0.1", 1)
    inner = client._client
    assert isinstance(inner, paho.Client)
    # The public paho API ManualAcks calls on it.
    inner.manual_ack_set(True)
    assert callable(inner.ack)
    assert paho.MQTT_ERR_SUCCESS == 0
    assert inner._sock is None
    assert not SocketReads(client).take_over()  # not connected yet


async def test_private_state_of_a_connected_client(mqtt_broker: Broker) -> None:
    topic = unique("contract")
    async with asyncio.timeout(WAIT_S):
        receiver = aiomqtt.Client(mqtt_broker.host, mqtt_broker.port, identifier=unique("c"))
        async with receiver, aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as sender:
            inner = receiver._client
            sock = inner._sock
            assert sock is not None and sock is inner.socket()
            assert isinstance(sock.fileno(), int)
            queue = receiver._queue
            assert isinstance(queue, asyncio.Queue) and queue.qsize() == 0
            disconnected = receiver._disconnected
            assert isinstance(disconnected, asyncio.Future) and not disconnected.done()

            reads = SocketReads(receiver)
            assert reads.take_over()
            # paho now reads the connection through the replacement socket.
            assert isinstance(inner._sock, BufferedSocket)
            await receiver.subscribe(topic, qos=1)
            await sender.publish(topic, b"through the buffer", qos=1)
            message = await next_message(receiver)
            assert message.payload == b"through the buffer"
            assert inner._sock.reads >= 1


def test_acks_py_touches_no_private_attribute_unchecked_here() -> None:
    tree = ast.parse(Path(acks.__file__).read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    }
    assert used == set(PRIVATE)
