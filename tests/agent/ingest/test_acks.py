"""The adapters that reach under aiomqtt, against a real Mosquitto: manual acks
(unacked means redelivered) and pausing socket reads (backpressure)."""

from __future__ import annotations

import asyncio
import os
import select
import socket
from pathlib import Path
from typing import cast

import aiomqtt
import pytest
from aiomqtt.client import ProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.domain import MessageRef
from agent.ingest.acks import BufferedSocket, ManualAcks, SocketReads
from tests.agent.ingest.helpers import WAIT_S, next_message, unique
from tests.support import Broker

SESSION_EXPIRY_S = 300


def persistent_client(broker: Broker, client_id: str) -> aiomqtt.Client:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=client_id,
        protocol=ProtocolVersion.V5,
        clean_start=False,
        properties=properties,
    )


def ref_of(message: aiomqtt.Message, session: int) -> MessageRef:
    return MessageRef(message.mid, message.qos, session)


async def test_unacked_message_is_redelivered_and_acked_one_is_not(
    mqtt_broker: Broker,
) -> None:
    client_id = unique("acks")
    topic = unique("acks-topic")
    async with asyncio.timeout(WAIT_S):
        first = persistent_client(mqtt_broker, client_id)
        acks = ManualAcks(first, session=1)
        async with first, aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as sender:
            await first.subscribe(topic, qos=1)
            await sender.publish(topic, b"acked", qos=1)
            await sender.publish(topic, b"not acked", qos=1)
            acked = await next_message(first)
            unacked = await next_message(first)
            assert (acked.payload, unacked.payload) == (b"acked", b"not acked")
            # A ref from an older connection must not ack whatever now has its id.
            assert acks.ack([MessageRef(unacked.mid, 1, session=0)]) == 0
            assert acks.stale == 1
            assert acks.ack([ref_of(acked, 1), MessageRef(0, 0, 1)]) == 1

        second = persistent_client(mqtt_broker, client_id)
        acks = ManualAcks(second, session=2)
        async with second, aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as sender:
            # The broker resends in-flight messages first; the marker then proves
            # nothing else was coming.
            await sender.publish(topic, b"marker", qos=1)
            seen: list[aiomqtt.Message] = []
            while not seen or seen[-1].payload != b"marker":
                seen.append(await next_message(second))
            assert [m.payload for m in seen] == [b"not acked", b"marker"]
            assert acks.ack(ref_of(m, 2) for m in seen) == 2


async def publish_and_arrive(
    sender: aiomqtt.Client, receiver: aiomqtt.Client, topic: str, count: int
) -> socket.socket:
    """Publish messages "0".."count-1"; return the receiver's socket once they reach it."""
    for i in range(count):
        await sender.publish(topic, str(i).encode(), qos=1)
    sock = cast(socket.socket, receiver._client.socket())
    assert sock is not None
    watched: list[socket.socket] = [sock]
    readable, _, _ = await asyncio.to_thread(select.select, watched, [], [], WAIT_S)
    assert readable, "the broker never sent the messages"
    return sock


async def test_paused_reads_leave_messages_in_the_socket_until_resumed(
    mqtt_broker: Broker,
) -> None:
    topic = unique("reads-topic")
    count = 20
    async with asyncio.timeout(WAIT_S):
        receiver = aiomqtt.Client(mqtt_broker.host, mqtt_broker.port, identifier=unique("reads"))
        async with receiver, aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as sender:
            await receiver.subscribe(topic, qos=1)
            reads = SocketReads(receiver)
            reads.pause()
            assert reads.paused
            # The bytes reach this end of the connection (the socket turns readable)...
            sock = await publish_and_arrive(sender, receiver, topic, count)
            for _ in range(20):  # ...and the loop gets every chance to read them
                await asyncio.sleep(0)
            assert reads.backlog() == 0
            assert sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # still unread
            reads.resume()
            assert not reads.paused
            got = [await next_message(receiver) for _ in range(count)]
            assert [m.payload for m in got] == [str(i).encode() for i in range(count)]


async def test_resume_after_the_connection_closed_leaves_its_old_descriptor_alone(
    mqtt_broker: Broker, tmp_path: Path
) -> None:
    # The broker restarted while reads were paused; the consumer then resumes the old
    # connection's reads, whose descriptor number a file has taken meanwhile. epoll
    # refuses a regular file (EPERM): the agent died of it in the chaos suite.
    async with asyncio.timeout(WAIT_S):
        receiver = aiomqtt.Client(mqtt_broker.host, mqtt_broker.port, identifier=unique("reads"))
        async with receiver:
            reads = SocketReads(receiver)
            reads.pause()
            assert reads.paused
            sock = receiver._client.socket()
            assert sock is not None
            fd = sock.fileno()
        with (tmp_path / "edgewatch.db").open("wb") as file:
            own = file.fileno() == fd  # the file took the free number itself
            if not own:
                os.dup2(file.fileno(), fd)
            try:
                reads.resume()
                assert not reads.paused
                assert not asyncio.get_running_loop().remove_reader(fd)
            finally:
                if not own:
                    os.close(fd)


def test_buffered_socket_serves_small_reads_from_one_large_one() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.setblocking(False)
        buffered = BufferedSocket(right)
        with pytest.raises(BlockingIOError):  # nothing sent yet: what the socket says
            buffered.recv(1)
        left.sendall(b"\x30\x03abc\x30\x02de")
        select.select([right], [], [], WAIT_S)
        assert buffered.recv(1) == b"\x30"
        assert buffered.pending() == 8  # the rest came with the first read
        assert buffered.recv(1) == b"\x03"
        assert buffered.recv(10) == b"abc\x30\x02de"  # a short read, as sockets do
        assert buffered.pending() == 0
        assert buffered.fileno() == right.fileno()  # everything else is the socket's
        left.close()
        select.select([right], [], [], WAIT_S)
        assert buffered.recv(1) == b""  # the peer closed


async def test_a_burst_in_one_read_is_delivered_without_more_data(mqtt_broker: Broker) -> None:
    # Messages left in the buffer must not wait for the kernel to signal the socket
    # readable again: after this burst nothing else arrives.
    topic = unique("burst-topic")
    count = 300
    async with asyncio.timeout(WAIT_S):
        receiver = aiomqtt.Client(mqtt_broker.host, mqtt_broker.port, identifier=unique("burst"))
        async with receiver, aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as sender:
            await receiver.subscribe(topic, qos=1)
            reads = SocketReads(receiver)
            assert reads.take_over()
            reads.pause()  # let the whole burst pile up in the kernel first
            await publish_and_arrive(sender, receiver, topic, count)
            reads.resume()
            got = [await next_message(receiver) for _ in range(count)]
            assert [m.payload for m in got] == [str(i).encode() for i in range(count)]
