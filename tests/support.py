"""Real components for tests: a Mosquitto broker, a migrated database, the real CLI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BROKER_START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()),
        None,
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed: `apt-get install -y mosquitto`")
    return found


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    """Return once ``host:port`` accepts TCP connections, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listening on {host}:{port} after {timeout_s}s"
                ) from None
            time.sleep(0.02)  # polling a socket, not synchronising with our own code


@dataclass
class Broker:
    """A real Mosquitto on 127.0.0.1; ``stop()``/``start()`` simulate an outage."""

    host: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        # Persistence in memory only; per-client queues large enough that QoS 1
        # tests never lose messages to broker limits.
        conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    "persistence false",
                    "max_queued_messages 1000000",
                    "max_inflight_messages 1000",
                    "max_packet_size 1048576",
                    f"log_dest file {self.workdir / 'mosquitto.log'}",
                    "log_type error",
                    "log_type warning",
                    "",
                ]
            )
        )
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.host, self.port, BROKER_START_TIMEOUT_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None


@contextmanager
def running_broker(workdir: Path) -> Iterator[Broker]:
    broker = Broker("127.0.0.1", free_port(), workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a CLI subprocess: no inherited EDGEWATCH_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWATCH_")}
    env["COLUMNS"] = "200"  # rich wraps tables at 80 columns otherwise
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``edgewatch`` console script in a subprocess."""
    exe = Path(sys.executable).with_name("edgewatch")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "agent"]
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        input=input_text,
        check=False,
    )
