"""The simulated fleet as an OPC UA server, read back by the agent's own OPC UA ingest
(SignAndEncrypt), and `edgewatch simulate fleet --protocol opcua` on the command line."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import tomllib
from pathlib import Path

from agent.domain import Event, Inbound
from agent.ingest.decode import DecodeLimits
from agent.ingest.opcua import OpcUaIngest
from agent.metrics import Metrics
from agent.settings import OpcUaSettings, load_settings
from simulators.fleet import FleetConfig, fleet_messages
from simulators.opcua_server import (
    ServerSecurity,
    agent_config,
    fleet_sensors,
    make_certificates,
    serve_fleet_opcua,
)
from simulators.stream import Pacing
from tests.conftest import CliRunner

WAIT_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_every_sample_of_the_fleet_arrives_as_one_reading(tmp_path: Path) -> None:
    # Flat out: the server queues many samples per variable between two publishes and
    # the ingest works through backlogs, which must not cut ticks in two.
    config = FleetConfig(
        assets=3, compressors=1, rate_hz=1.0, duration_s=100, seed=3, start_ts=1_790_000_000.0
    )
    certs = make_certificates(tmp_path / "pki")
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    toml = agent_config(
        url,
        fleet_sensors(config),
        security_mode="SignAndEncrypt",
        certs=certs,
        sampling_interval_ms=1000.0,
        publishing_interval_ms=50.0,
        queue_size=10_000,
    )
    settings = OpcUaSettings.model_validate(
        {**tomllib.loads(toml)["opcua"], "reconnect_initial_s": 0.2}
    )
    out: asyncio.Queue[Inbound] = asyncio.Queue()
    connected = threading.Event()

    async def record(event: Event) -> None:
        if event.kind == "opcua_connected":
            connected.set()

    # The stream starts in the past: the checks of time are not the subject here.
    limits = DecodeLimits(max_past_ms=10**13)
    ingest = OpcUaIngest(settings, "site", limits, out, Metrics(), 4096, record)
    reading = asyncio.create_task(ingest.run())

    def wait_for_agent(_server: object) -> None:
        assert connected.wait(WAIT_S), "the ingest did not connect"

    expected = {
        (chunk.asset, round(ts * 1000), name): column[i]
        for chunk in fleet_messages(config, config.start_ts or 0)
        for i, ts in enumerate(chunk.ts)
        for name, column in chunk.values.items()
    }
    samples = {(asset, ts) for asset, ts, _ in expected}
    # The server serves until the ingest has read every sample: a fixed linger after
    # the last write lost the final publishes whenever the machine was slow.
    done = threading.Event()
    serving = asyncio.ensure_future(
        asyncio.to_thread(
            serve_fleet_opcua,
            config,
            endpoint=url,
            security=ServerSecurity.from_certificates(certs),
            pacing=Pacing.fast(),
            on_ready=wait_for_agent,
            stop=done,
            linger_s=WAIT_S,
        )
    )
    got: list[Inbound] = []
    try:
        async with asyncio.timeout(WAIT_S):
            while sum(len(item.readings) for item in got) < len(samples):
                got.append(await out.get())
    finally:
        # The client first: one that reconnects while the server stops holds it up.
        ingest.stop()
        async with asyncio.timeout(10):
            await reading
        done.set()
        async with asyncio.timeout(WAIT_S):
            report = await serving
    assert report.publish.readings_sent == len(samples) > 300
    assert [item.rejected for item in got if item.rejected] == []
    stored = {
        (r.asset, r.ts_ms, name): value
        for item in got
        for r in item.readings
        for name, value in r.values.items()
    }
    assert stored == expected
    assert out.empty()


def test_the_cli_serves_the_fleet_and_writes_the_agents_settings(
    tmp_path: Path, cli: CliRunner
) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    result = cli(
        "simulate",
        "fleet",
        "--protocol",
        "opcua",
        "--endpoint",
        url,
        "--security",
        "SignAndEncrypt",
        "--pki",
        "pki",
        "--agent-config",
        "agent.toml",
        "--assets",
        "2",
        "--count",
        "4",
        "--as-fast-as-possible",
        "--linger",
        "0s",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["readings_sent"] == 4
    assert sorted(p.name for p in (tmp_path / "pki").iterdir()) == [
        "client_cert.der",
        "client_key.pem",
        "server_cert.der",
        "server_key.pem",
    ]
    settings = load_settings(tmp_path / "agent.toml")
    (endpoint,) = settings.opcua.endpoints
    assert settings.opcua.enabled
    assert endpoint.url == url
    assert endpoint.security_mode == "SignAndEncrypt"
    assert endpoint.assets["pump-002"]["flow_m3_h"] == "ns=2;s=pump-002.flow_m3_h"

    refused = cli("simulate", "fleet", "--protocol", "opcua", "--security", "Encrypt")
    assert refused.returncode == 2
    assert "None, Sign or SignAndEncrypt" in refused.stderr
