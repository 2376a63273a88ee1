"""systemd's service notification protocol (``Type=notify``, ``WatchdogSec=``), no dependency.

systemd passes ``NOTIFY_SOCKET`` (a datagram socket, ``@`` = Linux abstract
namespace) and, with a watchdog, ``WATCHDOG_USEC``/``WATCHDOG_PID``. Outside systemd
nothing is set and every call is a no-op, so the agent behaves the same in a
terminal, in tests and under the unit.
"""

from __future__ import annotations

import logging
import os
import socket

from agent.logs import fields

log = logging.getLogger(__name__)


class Notifier:
    """Sends ``READY=1``, ``WATCHDOG=1``, ``STATUS=...`` and ``STOPPING=1`` to systemd."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if raw.startswith("@"):
            self.address = "\0" + raw[1:]
        elif raw.startswith("/"):
            self.address = raw
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process systemd watches; a child (e.g. a subprocess that
        # inherited the environment) must not ping on the agent's behalf.
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ping_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half the watchdog timeout, as systemd advises."""
        return None if self.watchdog_s is None else self.watchdog_s / 2

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self, status: str = "") -> None:
        self._send("WATCHDOG=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def _send(self, message: str) -> None:
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(message.encode())
        except OSError as exc:
            # systemd going away must not take the agent with it; say so once.
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot notify systemd", extra=fields(socket=self.address, error=str(exc))
                )
