"""systemd notifications over a real datagram socket, as systemd would receive them."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sdnotify import Notifier


@pytest.fixture
def systemd_socket() -> Iterator[tuple[str, socket.socket]]:
    # AF_UNIX paths are limited to ~108 bytes: pytest's tmp_path can be longer.
    folder = Path(tempfile.mkdtemp(prefix="ew-notify-", dir="/tmp"))
    path = folder / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield str(path), sock
    finally:
        sock.close()
        path.unlink()
        folder.rmdir()


def test_messages_reach_the_socket(systemd_socket: tuple[str, socket.socket]) -> None:
    path, sock = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert notifier.enabled
    assert notifier.ping_interval_s() == 2.0
    notifier.ready("connected")
    notifier.watchdog()
    notifier.stopping()
    assert sock.recv(256) == b"READY=1\nSTATUS=connected"
    assert sock.recv(256) == b"WATCHDOG=1"
    assert sock.recv(256) == b"STOPPING=1"


def test_abstract_namespace_socket() -> None:
    name = f"edgewatch-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        Notifier({"NOTIFY_SOCKET": "@" + name}).status("starting")
        assert sock.recv(256) == b"STATUS=starting"


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ping_interval_s() is None
    notifier.ready()  # no socket, no error


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier(env).ping_interval_s() is None


def test_a_vanished_socket_is_logged_once_and_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify"})
    notifier.ready()
    notifier.watchdog()
    assert [r.getMessage() for r in caplog.records] == ["cannot notify systemd"]
