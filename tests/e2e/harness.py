"""Run the real agent (``edgewatch run``) as a subprocess against a real broker."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import cli_env

POLL_S = 0.05


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll a cross-process condition (database rows, a log line) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(POLL_S)


def write_config(path: Path, data_dir: Path, port: int, **sections: dict[str, Any]) -> Path:
    # The broker is shared by the session and the agent keeps a persistent session
    # under its client id: one id per data directory, so an agent never inherits the
    # messages queued for another test's stopped agent (a restart of the same one does).
    agent_id = "gw-" + hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:10]
    base: dict[str, dict[str, Any]] = {
        "identity": {"site": "e2e", "agent": agent_id},
        "mqtt": {"host": "127.0.0.1", "port": port, "health_interval_s": 1.0},
        # Commits within half a second at the tests' low rates (the default waits up
        # to 10 s there to spare SD cards): the adaptive wait runs, briefly.
        "storage": {
            "data_dir": str(data_dir),
            "commit_interval_ms": 100,
            "commit_max_wait_ms": 500,
        },
        "model": {"commission_samples": 150, "commission_cpu_budget_s": 5.0},
        "sync": {"enabled": False},
        "logging": {"level": "INFO", "format": "json"},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class AgentProcess:
    """``edgewatch run`` in a subprocess; its JSON log lines are collected."""

    config: Path
    cwd: Path
    #: Extra environment of the agent process (e.g. systemd's NOTIFY_SOCKET).
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, *, wait_subscribed_s: float = 60.0) -> None:
        exe = Path(sys.executable).with_name("edgewatch")
        self.events = []
        self.process = subprocess.Popen(
            [str(exe), "--config", str(self.config), "run"],
            cwd=self.cwd,
            env=cli_env(self.env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        if wait_subscribed_s:
            wait_until(lambda: self.saw("subscribed"), wait_subscribed_s, "the agent to subscribe")

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = {"event": "non-json", "line": line.rstrip()}
            with self._lock:
                self.events.append(entry)

    def saw(self, event: str) -> bool:
        with self._lock:
            return any(e.get("event") == event for e in self.events)

    def saw_prefix(self, prefix: str) -> bool:
        with self._lock:
            return any(str(e.get("event", "")).startswith(prefix) for e in self.events)

    def log_text(self) -> str:
        with self._lock:
            return "\n".join(json.dumps(e) for e in self.events)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout_s)
        return code

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read-only query on the agent's database while it runs (WAL allows it)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []  # schema not created yet
    finally:
        conn.close()


def scalar(db: Path, sql: str, *args: Any) -> Any:
    rows = query(db, sql, *args)
    return rows[0][0] if rows else None


def retained(host: str, port: int, topic_filter: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """Retained messages on ``topic_filter`` right now, JSON-decoded, by topic."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    got: dict[str, Any] = {}
    done = threading.Event()
    marker = f"edgewatch-test/marker/{os.getpid()}/{time.monotonic_ns()}"
    client = paho.Client(CallbackAPIVersion.VERSION2)

    def on_message(_c: object, _u: object, message: paho.MQTTMessage) -> None:
        if message.topic == marker:
            done.set()
        elif message.retain:
            got[message.topic] = json.loads(message.payload)

    def on_subscribe(*_: object) -> None:
        # Retained messages arrive right after SUBACK; a round trip on a private
        # topic, subscribed after them, marks their end.
        if not done.is_set():
            client.subscribe(marker, qos=1)
            client.publish(marker, b"end", qos=1)

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.connect(host, port)
    client.loop_start()
    client.subscribe(topic_filter, qos=1)
    try:
        if not done.wait(timeout_s):
            raise TimeoutError("no answer from the broker")
    finally:
        client.loop_stop()
        client.disconnect()
    return got
