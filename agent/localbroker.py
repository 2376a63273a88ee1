"""A private broker on 127.0.0.1 for the demo, the benchmark and the tests.

Real gateways run their own broker (or a plant's); this only starts the
``mosquitto`` binary with a generated config on a free local port, or, where
Mosquitto is not installed and the caller allows it, edgewatch's own small broker
(:mod:`agent.minibroker`) in a child process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from agent.domain import max_packet_bytes
from agent.errors import BrokerError
from agent.settings import IngestSettings

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
#: "auto": Mosquitto when installed, else the embedded broker.
BrokerChoice = Literal["auto", "mosquitto", "embedded"]
_SEARCH = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")
_DEFAULT_MAX_PAYLOAD_BYTES: int = IngestSettings.model_fields["max_payload_bytes"].default


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next((p for p in _SEARCH if Path(p).is_file()), None)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    """True once ``host:port`` accepts connections, False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)  # polling a foreign process's socket
    return False


class LocalBroker:
    """``with LocalBroker(workdir) as broker: ...``; ``stop()``/``start()`` for outages.

    ``kind`` says which broker runs once started: "mosquitto" or "embedded".
    ``embedded_options`` are extra command-line options for the embedded broker
    (``--max-queued 10``, ``--session-expiry-s 60``: see ``python -m agent.minibroker -h``).
    ``max_payload_bytes`` is the agent's ``ingest.max_payload_bytes``: Mosquitto
    disconnects a client sending a packet bigger than the agent would accept, as a
    plant broker configured to match would.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        choice: BrokerChoice = "mosquitto",
        embedded_options: Sequence[str] = (),
        max_payload_bytes: int = _DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.workdir = workdir
        self.host = host
        self.port = port or free_port(host)
        self.choice: BrokerChoice = choice
        self.embedded_options = tuple(embedded_options)
        self.max_packet_bytes = max_packet_bytes(max_payload_bytes)
        self.kind: Literal["mosquitto", "embedded"] = "mosquitto"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def config_text(self) -> str:
        # In-memory broker with queues deep enough that a stopped agent's persistent
        # session keeps every QoS 1 message (Mosquitto's default keeps only 1000).
        return "\n".join(
            [
                f"listener {self.port} {self.host}",
                "allow_anonymous true",
                "persistence false",
                "max_queued_messages 1000000",
                "max_inflight_messages 1000",
                # $SYS counts (dropped messages: simulate --as-fast-as-possible reads
                # them after its run) published every second, not every 10.
                "sys_interval 1",
                f"max_packet_size {self.max_packet_bytes}",
                f"log_dest file {self.workdir / 'mosquitto.log'}",
                "log_type error",
                "log_type warning",
                "",
            ]
        )

    def _command(self) -> list[str]:
        binary = None if self.choice == "embedded" else find_mosquitto()
        if binary is not None:
            self.kind = "mosquitto"
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(self.config_text())
            return [binary, "-c", str(conf)]
        if self.choice == "mosquitto":
            raise BrokerError(
                "the mosquitto broker is not installed",
                hint="install it: sudo apt-get install -y mosquitto",
            )
        self.kind = "embedded"
        return [
            sys.executable,
            "-m",
            "agent.minibroker",
            "--host",
            self.host,
            *self.embedded_options,
        ]

    @property
    def log_path(self) -> Path:
        return self.workdir / ("mosquitto.log" if self.kind == "mosquitto" else "minibroker.log")

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = self._command()
        if self.kind == "embedded":
            command += ["--port", str(self.port)]
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(command, stdout=log, stderr=log)
        else:
            self.process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        if not wait_for_port(self.host, self.port, START_TIMEOUT_S):
            self.stop()
            raise BrokerError(
                f"the {self.kind} broker did not start on {self.host}:{self.port}",
                hint=f"see {self.log_path}",
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
        self.process = None

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
