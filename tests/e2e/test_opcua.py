"""OPC UA end to end: an asyncua server with Basic256Sha256 SignAndEncrypt -> `edgewatch
run` with [opcua] -> readings stored with their values and source timestamps, bad
values as dead letters with their reason codes, and reading resumed after the server
went away and came back."""

from __future__ import annotations

import json
import math
import socket
import time
from pathlib import Path

from sqlalchemy import create_engine

from agent.storage import queries
from simulators.opcua_server import (
    FleetServer,
    ServerSecurity,
    ServerThread,
    agent_config,
    make_certificates,
)
from simulators.pump import SENSORS
from tests.e2e.harness import AgentProcess, query, scalar, wait_until, write_config
from tests.support import Broker

ASSET = "pump-opc"
WAIT_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tick(i: int) -> dict[str, float]:
    return {sensor: round(10.0 * k + i + 0.25, 3) for k, sensor in enumerate(SENSORS)}


def stored(db: Path) -> int:
    return int(scalar(db, "select coalesce(sum(count), 0) from reading_blocks") or 0)


def events(db: Path, kind: str) -> int:
    return int(scalar(db, "select count(*) from events where kind = ?", kind) or 0)


def test_opcua_readings_dead_letters_and_reconnect(tmp_path: Path, mqtt_broker: Broker) -> None:
    certs = make_certificates(tmp_path / "pki")
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    security = ServerSecurity.from_certificates(certs)
    config = write_config(tmp_path / "edgewatch.toml", tmp_path / "data", mqtt_broker.port)
    opcua = agent_config(
        url,
        {ASSET: SENSORS},
        security_mode="SignAndEncrypt",
        certs=certs,
        sampling_interval_ms=1000.0,
        publishing_interval_ms=100.0,
        queue_size=50,
    )
    opcua = opcua.replace("enabled = true\n", "enabled = true\nreconnect_initial_s = 0.2\n")
    config.write_text(config.read_text() + "\n" + opcua)
    db = tmp_path / "data" / "edgewatch.db"

    start_ms = (time.time_ns() // 1_000_000) - 60_000
    server = ServerThread(FleetServer(url, {ASSET: SENSORS}, security))
    server.start()
    agent = AgentProcess(config=config, cwd=tmp_path)
    try:
        # A value present before the agent subscribes is its first reading.
        server.call(server.server.write(ASSET, start_ms, tick(0)))
        agent.start()
        wait_until(lambda: agent.saw("opcua connected"), WAIT_S, "the OPC UA session")
        for i in range(1, 20):
            server.call(server.server.write(ASSET, start_ms + i * 1000, tick(i)))
        wait_until(lambda: stored(db) == 20, WAIT_S, "20 readings stored")

        bad_nan = {**tick(20), "bearing_temp_c": math.nan}
        server.call(server.server.write(ASSET, start_ms + 20_000, bad_nan))
        server.call(
            server.server.write(
                ASSET, start_ms + 21_000, tick(21), status={"flow_m3_h": 0x808C0000}
            )
        )
        server.call(server.server.write(ASSET, start_ms + 22_000, tick(22)))
        wait_until(lambda: stored(db) == 21, WAIT_S, "the reading after the bad ones")
        wait_until(
            lambda: int(scalar(db, "select count(*) from dead_letters") or 0) == 2,
            WAIT_S,
            "two dead letters",
        )
        letters = query(
            db, "select reason, detail, asset, topic from dead_letters order by received_ms"
        )
        assert [(r, a, t) for r, _, a, t in letters] == [
            ("non_finite", ASSET, url),
            ("schema", ASSET, url),
        ]
        assert "'bearing_temp_c' is nan" in letters[0][1]
        assert "BadSensorFailure" in letters[1][1]

        # The server goes away and comes back: the agent reconnects and reads on.
        server.close()
        wait_until(lambda: agent.saw("opcua disconnected"), WAIT_S, "the lost session noticed")
        server = ServerThread(FleetServer(url, {ASSET: SENSORS}, security))
        server.start()
        wait_until(lambda: events(db, "opcua_connected") == 2, WAIT_S, "the second session")
        for i in range(23, 26):
            server.call(server.server.write(ASSET, start_ms + i * 1000, tick(i)))
        wait_until(lambda: stored(db) == 24, WAIT_S, "readings after the reconnect")

        engine = create_engine(f"sqlite:///{db}")
        try:
            readings, _ = queries.recent_readings(engine, "e2e", ASSET, 100)
        finally:
            engine.dispose()
        expected = [*range(20), 22, 23, 24, 25]
        assert [r.ts_ms for r in readings] == [start_ms + i * 1000 for i in expected]
        for reading, i in zip(readings, expected, strict=True):
            # Stored as float32: seven significant digits.
            assert reading.values.keys() == set(SENSORS)
            for sensor, value in tick(i).items():
                assert math.isclose(reading.values[sensor], value, rel_tol=1e-6), (i, sensor)
        assert events(db, "opcua_disconnected") == 1
        (detail,) = query(
            db, "select detail_json from events where kind = 'opcua_connected' limit 1"
        )[0]
        assert json.loads(detail)["security"] == "Basic256Sha256/SignAndEncrypt"
        assert agent.stop() == 0
        # One line per state change, in the agent's format: asyncua's own chatter
        # (a line per publish, tracebacks on disconnect) stays out of the log.
        assert [e for e in agent.events if e.get("event") == "non-json"] == []
        changes = [e["event"] for e in agent.events if str(e.get("event")).startswith("opcua")]
        assert changes == ["opcua connected", "opcua disconnected", "opcua connected"], changes
    finally:
        if agent.process is not None and agent.process.poll() is None:
            agent.kill()
        server.close()
