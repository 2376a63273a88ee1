"""`edgewatch run --http`: the dashboard served from the agent's own process."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from agent.localbroker import free_port
from tests.e2e.fleet import make_fleet, publish
from tests.e2e.harness import AgentProcess, query, wait_until, write_config
from tests.support import Broker, cli_env

SITE = "e2e"


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def test_run_http_serves_the_dashboard_and_stops_with_the_agent(
    tmp_path: Path, mqtt_broker: Broker
) -> None:
    port = free_port("127.0.0.1")
    config = write_config(tmp_path / "edgewatch.toml", tmp_path / "data", mqtt_broker.port)
    agent = AgentProcess(config=config, cwd=tmp_path)
    exe = Path(sys.executable).with_name("edgewatch")
    agent.process = subprocess.Popen(
        [str(exe), "--config", str(config), "run", "--http", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    threading.Thread(target=agent._read, args=(agent.process,), daemon=True).start()
    try:
        wait_until(lambda: agent.saw("serving the dashboard"), 60, "the dashboard to start")
        wait_until(lambda: agent.saw("subscribed"), 60, "the agent to subscribe")
        fleet = make_fleet(3, 60, fault_fraction=0.0, seed=5)
        publish(mqtt_broker, fleet.chunks, site=SITE)
        db = tmp_path / "data" / "edgewatch.db"
        wait_until(lambda: len(query(db, "select id from assets")) == 3, 60, "three assets")
        status, body = _get(f"http://127.0.0.1:{port}/api/fleet")
        assert status == 200
        assert {a["asset"] for a in orjson.loads(body)["assets"]} == fleet.healthy
        status, page = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and b"pump-001" in page
        # No token configured: the agent's dashboard is read-only.
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/alerts/1/ack", method="POST", data=b""
        )
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError("a write without a token was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403
    finally:
        code = agent.stop()
    assert code == 0, agent.log_text()[-3000:]
    assert agent.saw("agent stopped")
    # Nobody listens on the port any more: the server went with the agent.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
