"""OPC UA ingest: the grouping rule and validation (pure), then against a real asyncua
server with Basic256Sha256 SignAndEncrypt: readings, dead letters, reconnect, refusal."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import pytest

from agent.domain import Event, Inbound, Reading, RejectReason
from agent.errors import EdgewatchError
from agent.ingest.decode import DecodeLimits
from agent.ingest.opcua import Change, Grouper, OpcUaIngest
from agent.metrics import Metrics
from agent.settings import OpcUaSettings
from simulators.opcua_server import (
    Certificates,
    FleetServer,
    ServerSecurity,
    make_certificates,
    node_ids,
)

NOW_MS = 1_790_000_000_000
SENSORS = {"pump-1": ("temp_c", "flow_m3_h"), "pump-2": ("temp_c", "flow_m3_h")}
WAIT_S = 15.0


def grouper(span_ms: float = 1000.0, hold_s: float = 1.0) -> tuple[Grouper, Metrics]:
    metrics = Metrics()
    return (
        Grouper(
            "site",
            "opc.tcp://plc:4840",
            node_ids(SENSORS),
            span_ms=span_ms,
            hold_s=hold_s,
            limits=DecodeLimits(),
            dead_letter_max_bytes=4096,
            metrics=metrics,
        ),
        metrics,
    )


def change(sensor: str, value: object, ts_ms: int = NOW_MS, **kw: object) -> Change:
    return Change(
        str(kw.get("asset", "pump-1")),
        sensor,
        value,
        kw.get("status"),  # type: ignore[arg-type]
        ts_ms,
    )


def test_a_complete_tick_is_one_reading_at_once() -> None:
    g, metrics = grouper()
    assert g.add(change("temp_c", 40.5, NOW_MS), NOW_MS, 0.0) == []
    (out,) = g.add(change("flow_m3_h", 12, NOW_MS + 3), NOW_MS, 0.0)
    (reading,) = out.readings
    assert reading.asset == "pump-1"
    assert reading.ts_ms == NOW_MS + 3  # the newest source timestamp of the group
    assert reading.values == {"temp_c": 40.5, "flow_m3_h": 12.0}
    assert out.ref is None and out.rejected is None
    assert json.loads(out.payload)["nodes"]["temp_c"] == "ns=2;s=pump-1.temp_c"
    assert metrics.messages_received == 1


def test_a_partial_tick_closes_after_a_publishing_interval_with_the_last_values() -> None:
    g, _ = grouper(hold_s=1.0)
    g.add(change("temp_c", 40.0), NOW_MS, 0.0)
    g.add(change("flow_m3_h", 10.0), NOW_MS, 0.0)
    # Next tick only temp changes (flow reported by exception: unchanged, not sent).
    assert g.add(change("temp_c", 41.0, NOW_MS + 1000), NOW_MS, 5.0) == []
    assert g.next_due() == 6.0
    assert g.due(NOW_MS, 5.5) == []
    (out,) = g.due(NOW_MS, 6.0)
    assert out.readings[0].values == {"temp_c": 41.0, "flow_m3_h": 10.0}
    assert out.readings[0].ts_ms == NOW_MS + 1000
    assert g.next_due() is None


def test_queued_samples_sent_item_by_item_regroup_by_source_time() -> None:
    g, _ = grouper(span_ms=1000.0)
    ticks = [NOW_MS, NOW_MS + 1000, NOW_MS + 2000]
    # A server drains each variable's queue in turn: every temp, then every flow.
    for i, ts in enumerate(ticks):
        assert g.add(change("temp_c", float(i), ts), NOW_MS + 5000, 0.0) == []
    out = []
    for i, ts in enumerate(ticks):
        out += g.add(change("flow_m3_h", 10.0 + i, ts + 5), NOW_MS + 5000, 0.0)
    assert [(r.ts_ms, r.values) for item in out for r in item.readings] == [
        (ts + 5, {"temp_c": float(i), "flow_m3_h": 10.0 + i}) for i, ts in enumerate(ticks)
    ]


def test_a_repeated_sensor_or_a_change_outside_the_span_opens_another_tick() -> None:
    g, _ = grouper(span_ms=1000.0, hold_s=1.0)
    g.add(change("temp_c", 1.0, NOW_MS), NOW_MS, 0.0)
    g.add(change("temp_c", 2.0, NOW_MS + 10), NOW_MS, 0.5)  # same sensor: another tick
    g.add(change("temp_c", 3.0, NOW_MS + 1500), NOW_MS, 0.6)  # outside the span
    g.add(change("temp_c", 5.0, NOW_MS, asset="pump-2"), NOW_MS, 0.0)  # assets apart
    # The second tick falls due: it leaves with every older tick of its asset, in order.
    out = g.due(NOW_MS, 1.5)
    assert [(r.asset, r.ts_ms, r.values) for item in out for r in item.readings] == [
        ("pump-1", NOW_MS, {"temp_c": 1.0}),
        ("pump-1", NOW_MS + 10, {"temp_c": 2.0}),
        ("pump-2", NOW_MS, {"temp_c": 5.0}),
    ]
    (last,) = g.flush(NOW_MS)
    assert last.readings[0].values == {"temp_c": 3.0}
    assert g.next_due() is None


@pytest.mark.parametrize(
    ("value", "status", "reason", "detail"),
    [
        (math.nan, None, RejectReason.NON_FINITE, "'temp_c' is nan"),
        (math.inf, None, RejectReason.NON_FINITE, "'temp_c' is inf"),
        (True, None, RejectReason.SCHEMA, "must be a number, not bool"),
        ("hot", None, RejectReason.SCHEMA, "must be a number, not str"),
        (None, None, RejectReason.SCHEMA, "must be a number, not NoneType"),
        (40.0, "BadSensorFailure", RejectReason.SCHEMA, "status BadSensorFailure"),
    ],
)
def test_a_bad_value_makes_its_tick_a_dead_letter_and_the_sensor_missing_after(
    value: object, status: str | None, reason: RejectReason, detail: str
) -> None:
    g, metrics = grouper()
    g.add(change("temp_c", 40.0), NOW_MS, 0.0)
    g.add(change("flow_m3_h", 10.0), NOW_MS, 0.0)
    g.add(change("temp_c", value, NOW_MS + 1000, status=status), NOW_MS, 0.0)
    (out,) = g.add(change("flow_m3_h", 11.0, NOW_MS + 1000), NOW_MS, 0.0)
    assert out.readings == ()
    letter = out.rejected
    assert letter is not None
    assert letter.reason is reason
    assert detail in letter.detail
    assert letter.asset == "pump-1"
    assert letter.topic == "opc.tcp://plc:4840"
    assert json.loads(letter.payload)["values"]["flow_m3_h"] == 11.0
    assert metrics.dead_letters[reason.value] == 1
    # Until a good value comes, readings lack the sensor (the windowing stage's
    # missing_sensor); the good value of the rejected tick was kept.
    assert g.add(change("flow_m3_h", 12.0, NOW_MS + 2000), NOW_MS, 9.0) == []
    (later,) = g.due(NOW_MS, 10.0)
    assert later.readings[0].values == {"flow_m3_h": 12.0}


@pytest.mark.parametrize(
    ("offset_ms", "reason"),
    [(301_000, RejectReason.TS_FUTURE), (-31 * 86_400_000, RejectReason.TS_PAST)],
)
def test_source_timestamps_are_checked_like_json_ones(offset_ms: int, reason: RejectReason) -> None:
    g, _ = grouper()
    g.add(change("temp_c", 1.0, NOW_MS + offset_ms), NOW_MS, 0.0)
    (out,) = g.add(change("flow_m3_h", 1.0, NOW_MS + offset_ms), NOW_MS, 0.0)
    assert out.rejected is not None and out.rejected.reason is reason


async def test_a_backlog_is_read_whole_before_the_hold_timer_closes_a_tick() -> None:
    # The server sent many samples per variable in one publish (every temp, then every
    # flow); the ingest takes longer to work through them than the hold time: no tick
    # may close half-full while its other sensor still waits in the queue.
    settings = OpcUaSettings.model_validate(
        {
            "enabled": True,
            "publishing_interval_ms": 1,
            "queue_size": 3000,
            "endpoints": [
                {"url": "opc.tcp://plc:4840", "assets": node_ids({"pump-1": SENSORS["pump-1"]})}
            ],
        }
    )
    out: asyncio.Queue[Inbound] = asyncio.Queue()
    ingest = OpcUaIngest(settings, "site", DecodeLimits(max_past_ms=10**13), out, Metrics(), 4096)
    changes: asyncio.Queue[Change] = asyncio.Queue()
    ticks = range(3000)
    for sensor in ("temp_c", "flow_m3_h"):
        for i in ticks:
            changes.put_nowait(Change("pump-1", sensor, float(i), None, NOW_MS + i * 1000))
    lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    class Client:
        async def check_connection(self) -> None:
            return None

    reading = asyncio.create_task(ingest._read(Client(), settings.endpoints[0], changes, lost))  # type: ignore[arg-type]
    got: list[Reading] = []
    async with asyncio.timeout(WAIT_S):
        while len(got) < len(ticks):
            got += (await out.get()).readings
    lost.set_result("test over")
    assert await reading == "test over"
    assert [(r.ts_ms, r.values) for r in got] == [
        (NOW_MS + i * 1000, {"temp_c": float(i), "flow_m3_h": float(i)}) for i in ticks
    ]


# -- against a real server ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pki"))


def settings_for(url: str, certs: Certificates, **extra: object) -> OpcUaSettings:
    return OpcUaSettings.model_validate(
        {
            "enabled": True,
            "sampling_interval_ms": 100,
            "publishing_interval_ms": 100,
            "reconnect_initial_s": 0.2,
            "reconnect_max_s": 0.5,
            "timeout_s": 3,
            "endpoints": [
                {
                    "url": url,
                    "security_policy": "Basic256Sha256",
                    "security_mode": "SignAndEncrypt",
                    "cert_file": str(certs.client_cert),
                    "key_file": str(certs.client_key),
                    "server_cert_file": str(certs.server_cert),
                    "assets": node_ids(SENSORS),
                }
            ],
            **extra,
        }
    )


class Running:
    def __init__(self, settings: OpcUaSettings) -> None:
        self.out: asyncio.Queue[Inbound] = asyncio.Queue(1000)
        self.events: list[Event] = []
        self._recorded = asyncio.Event()
        self.ingest = OpcUaIngest(
            settings, "site", DecodeLimits(), self.out, Metrics(), 4096, self.record
        )

    async def record(self, event: Event) -> None:
        self.events.append(event)
        self._recorded.set()

    async def take(self, predicate: Callable[[Inbound], bool]) -> Inbound:
        """The next inbound item that satisfies ``predicate`` (others are skipped)."""
        async with asyncio.timeout(WAIT_S):
            while True:
                item = await self.out.get()
                if predicate(item):
                    return item

    async def event(self, kind: str, count: int = 1) -> None:
        async with asyncio.timeout(WAIT_S):
            while sum(e.kind == kind for e in self.events) < count:
                self._recorded.clear()
                await self._recorded.wait()


async def start_ingest(settings: OpcUaSettings) -> AsyncGenerator[Running, None]:
    running = Running(settings)
    task = asyncio.create_task(running.ingest.run())
    try:
        yield running
    finally:
        running.ingest.stop()
        async with asyncio.timeout(10):
            await task


def reading_of(asset: str, ts_ms: int) -> Callable[[Inbound], bool]:
    return lambda item: any(r.asset == asset and r.ts_ms == ts_ms for r in item.readings)


async def test_signed_and_encrypted_readings_dead_letters_and_reconnect(
    certs: Certificates,
) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    security = ServerSecurity.from_certificates(certs)
    server = FleetServer(url, SENSORS, security)
    await server.start()
    now = time.time_ns() // 1_000_000
    await server.write("pump-1", now - 1000, {"temp_c": 40.0, "flow_m3_h": 10.0})
    await server.write("pump-2", now - 1000, {"temp_c": 50.0, "flow_m3_h": 20.0})
    runs = start_ingest(settings_for(url, certs))
    running = await anext(runs)
    try:
        await running.event("opcua_connected")
        (connected,) = [e for e in running.events if e.kind == "opcua_connected"]
        assert connected.detail is not None
        assert connected.detail["security"] == "Basic256Sha256/SignAndEncrypt"
        assert connected.detail["monitored_items"] == 4
        # The values present at subscription time come first, source timestamps kept.
        first = await running.take(reading_of("pump-2", now - 1000))
        assert first.readings[0].values == {"temp_c": 50.0, "flow_m3_h": 20.0}

        await server.write("pump-1", now, {"temp_c": 41.5, "flow_m3_h": 11.0})
        item = await running.take(reading_of("pump-1", now))
        assert item.readings[0].values == {"temp_c": 41.5, "flow_m3_h": 11.0}

        await server.write("pump-1", now + 1000, {"temp_c": math.nan, "flow_m3_h": 12.0})
        bad = await running.take(lambda i: i.rejected is not None)
        assert bad.rejected is not None
        assert bad.rejected.reason is RejectReason.NON_FINITE
        assert bad.rejected.asset == "pump-1"

        await server.write(
            "pump-2", now + 1000, {"temp_c": 1.0, "flow_m3_h": 2.0}, status={"temp_c": 0x808C0000}
        )
        status = await running.take(lambda i: i.rejected is not None)
        assert status.rejected is not None
        assert status.rejected.reason is RejectReason.SCHEMA
        assert "BadSensorFailure" in status.rejected.detail

        # The server goes away and comes back on the same port: readings resume.
        await server.stop()
        await running.event("opcua_disconnected")
        assert not running.ingest.connected[url]
        server = FleetServer(url, SENSORS, security)
        await server.start()
        await running.event("opcua_connected", 2)
        assert running.ingest.sessions[url] == 2
        await server.write("pump-1", now + 2000, {"temp_c": 43.0, "flow_m3_h": 13.0})
        resumed = await running.take(reading_of("pump-1", now + 2000))
        assert resumed.readings[0].values == {"temp_c": 43.0, "flow_m3_h": 13.0}
        kinds = [e.kind for e in running.events]
        # One event per state change, not one per failed attempt.
        assert kinds.count("opcua_disconnected") == 1
        assert kinds.count("opcua_unreachable") <= 1
    finally:
        await runs.aclose()
        await server.stop()


async def test_a_client_certificate_the_server_does_not_trust_is_refused_and_retried(
    certs: Certificates, tmp_path: Path
) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    stranger = make_certificates(tmp_path / "other")
    security = ServerSecurity(
        certs.server_cert, certs.server_key, trusted_clients=(stranger.client_cert,)
    )
    server = FleetServer(url, SENSORS, security)
    await server.start()
    runs = start_ingest(settings_for(url, certs))
    running = await anext(runs)
    try:
        await running.event("opcua_unreachable")
        assert running.ingest.sessions[url] == 0
        (event,) = [e for e in running.events if e.kind == "opcua_unreachable"]
        assert event.level == "warning"
        assert "BadCertificateUntrusted" in event.message or "Untrusted" in event.message, event
    finally:
        await runs.aclose()
        await server.stop()


async def test_a_server_that_wants_a_user_takes_the_right_password_only(
    certs: Certificates,
) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    security = ServerSecurity.from_certificates(certs)
    server = FleetServer(url, SENSORS, security, users={"edgewatch": "s3cret"})
    await server.start()
    now = time.time_ns() // 1_000_000
    await server.write("pump-1", now, {"temp_c": 40.0, "flow_m3_h": 10.0})
    try:
        for password, kind in (("wrong", "opcua_unreachable"), ("s3cret", "opcua_connected")):
            doc = settings_for(url, certs).model_dump()
            doc["endpoints"][0].update(username="edgewatch", password=password)
            runs = start_ingest(OpcUaSettings.model_validate(doc))
            running = await anext(runs)
            try:
                await running.event(kind)
                if kind == "opcua_unreachable":
                    assert running.ingest.sessions[url] == 0
                    # The password is a secret: not in the events.
                    assert all("wrong" not in e.message for e in running.events)
                else:
                    item = await running.take(reading_of("pump-1", now))
                    assert item.readings[0].values == {"temp_c": 40.0, "flow_m3_h": 10.0}
            finally:
                await runs.aclose()
    finally:
        await server.stop()


async def test_a_malformed_node_id_or_key_file_stops_the_agent_with_one_line(
    certs: Certificates, tmp_path: Path
) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    bad_node = settings_for(url, certs).model_dump()
    bad_node["endpoints"][0]["assets"] = {"pump-1": {"temp_c": "not a node id"}}
    bad_key = settings_for(url, certs).model_dump()
    (tmp_path / "key.pem").write_text("not a key")
    bad_key["endpoints"][0]["key_file"] = str(tmp_path / "key.pem")
    for doc, words in ((bad_node, "is no node id"), (bad_key, "key_file")):
        ingest = OpcUaIngest(
            OpcUaSettings.model_validate(doc), "site", DecodeLimits(), asyncio.Queue(), Metrics(), 0
        )
        with pytest.raises(EdgewatchError, match=words):
            async with asyncio.timeout(10):
                await ingest.run()


def test_settings_refuse_half_configured_security() -> None:
    base = {"url": "opc.tcp://plc:4840", "assets": {"p": {"t": "ns=2;i=1"}}}
    for extra, words in (
        ({"security_policy": "Basic256Sha256"}, "security_mode None"),
        ({"security_policy": "Basic256Sha256", "security_mode": "Sign"}, "needs cert_file"),
        ({"password": "x"}, "password needs username"),
        ({"url": "http://plc"}, "opc.tcp://"),
        ({"assets": {}}, "at least one asset"),
    ):
        with pytest.raises(ValueError, match=words):
            OpcUaSettings.model_validate({"enabled": True, "endpoints": [{**base, **extra}]})
    with pytest.raises(ValueError, match="at least one"):
        OpcUaSettings.model_validate({"enabled": True})


def test_the_agent_imports_asyncua_only_when_opcua_is_enabled() -> None:
    code = "import sys, agent.runtime, agent.ingest.opcua; print('asyncua' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
