"""`edgewatch run` as systemd and Prometheus see it: notify protocol and /metrics."""

from __future__ import annotations

import socket
import tempfile
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from agent.localbroker import free_port
from tests.e2e.fleet import make_fleet, publish
from tests.e2e.harness import AgentProcess, scalar, wait_until, write_config
from tests.support import Broker

SITE = "e2e"
WAIT_S = 60.0


def scrape(port: int) -> dict[str, float]:
    """Samples by name with their labels folded in, e.g. ``messages_total{outcome=received}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def test_run_under_systemd_notify_with_metrics(tmp_path: Path, mqtt_broker: Broker) -> None:
    folder = Path(tempfile.mkdtemp(prefix="ew-notify-", dir="/tmp"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(folder / "notify"))
    notify.settimeout(WAIT_S)
    metrics_port = free_port()
    config = write_config(
        tmp_path / "edgewatch.toml",
        tmp_path / "data",
        mqtt_broker.port,
        metrics={"address": f"127.0.0.1:{metrics_port}"},
    )
    agent = AgentProcess(
        config=config,
        cwd=tmp_path,
        # A one-second watchdog: the agent must ping about twice a second.
        env={"NOTIFY_SOCKET": str(folder / "notify"), "WATCHDOG_USEC": "1000000"},
    )
    try:
        agent.start()
        # READY comes once every stage runs, then pings; "connected" once subscribed.
        # Each recv is bounded by the socket timeout, and the agent pings twice a second.
        messages = [notify.recv(1024).decode()]
        while sum(m.startswith("WATCHDOG=1\nSTATUS=connected") for m in messages) < 2:
            messages.append(notify.recv(1024).decode())
        assert messages[0].startswith("READY=1\nSTATUS="), messages

        fleet = make_fleet(2, 60, fault_fraction=0.0, seed=1)
        sent = publish(mqtt_broker, fleet.chunks, site=SITE).messages
        db = tmp_path / "data" / "edgewatch.db"
        wait_until(
            lambda: (scalar(db, "select coalesce(sum(count), 0) from reading_blocks") or 0) >= sent,
            WAIT_S,
            "readings",
        )
        got = scrape(metrics_port)
        assert got["edgewatch_messages_total{outcome=received}"] >= sent
        assert got["edgewatch_broker_connected"] == 1.0
        assert got["edgewatch_db_commit_seconds_count"] >= 1
        assert got["edgewatch_readings_accepted_total"] >= sent

        assert agent.stop() == 0
        seen: list[str] = []
        while not any(m.startswith("STOPPING=1") for m in seen):
            seen.append(notify.recv(1024).decode())
    finally:
        if agent.process is not None and agent.process.poll() is None:
            agent.kill()
        notify.close()
        (folder / "notify").unlink()
        folder.rmdir()
