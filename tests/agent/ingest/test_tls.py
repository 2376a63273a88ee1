"""TLS with client certificates (mTLS) and a password, against a real Mosquitto."""

from __future__ import annotations

import asyncio
import getpass
import logging
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from agent.errors import BrokerError
from agent.ingest.link import MqttLink
from agent.metrics import Metrics
from tests.agent.ingest.helpers import WAIT_S, make_settings, unique

USER, PASSWORD = "agent", "s3cret"
BROKER_START_S = 10.0


@dataclass(frozen=True)
class Address:
    host: str
    port: int


@dataclass
class TlsBroker:
    broker: Address
    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def _issue(name: str, subject: str, extensions: str, cwd: Path) -> None:
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        cwd=cwd,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    work = tmp_path_factory.mktemp("tls")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=edgewatch-test-ca",
        cwd=work,
    )
    _issue("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\n", work)
    _issue("client", "/CN=agent", "extendedKeyUsage=clientAuth\n", work)
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", "passwd", USER, PASSWORD],
        cwd=work,
        check=True,
        capture_output=True,
    )
    (work / "passwd").chmod(0o600)
    binary = shutil.which("mosquitto")
    if binary is None:
        pytest.skip("mosquitto is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = work / "mosquitto.conf"
    conf.write_text(
        "\n".join(
            [
                # Started as root, Mosquitto would switch to its own user, which
                # cannot read the private temporary directory with the keys.
                f"user {getpass.getuser()}",
                f"listener {port} 127.0.0.1",
                "allow_anonymous false",
                f"password_file {work / 'passwd'}",
                f"cafile {work / 'ca.crt'}",
                f"certfile {work / 'server.crt'}",
                f"keyfile {work / 'server.key'}",
                "require_certificate true",
                "persistence false",
                f"log_dest file {work / 'mosquitto.log'}",
                "",
            ]
        )
    )
    process = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_port(port)
        yield TlsBroker(
            Address("127.0.0.1", port),
            work / "ca.crt",
            work / "client.crt",
            work / "client.key",
        )
    finally:
        process.terminate()
        process.wait(timeout=5)


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + BROKER_START_S
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # polling a foreign process's socket


async def test_mutual_tls_with_password(tls_broker: TlsBroker) -> None:
    site = unique("site")
    settings = make_settings(
        tls_broker.broker,
        site=site,
        ca_file=str(tls_broker.ca),
        cert_file=str(tls_broker.cert),
        key_file=str(tls_broker.key),
        username=USER,
        password=PASSWORD,
    )
    topic = f"edgewatch/{site}/pump-1/telemetry"
    async with asyncio.timeout(WAIT_S), MqttLink(settings, Metrics()) as link:
        assert await link.wait_connected()
        async with aiomqtt.Client(
            "127.0.0.1",
            tls_broker.broker.port,
            username=USER,
            password=PASSWORD,
            tls_context=tls_broker.client_context(),
        ) as device:
            await device.publish(topic, b"over tls", qos=1)
        async for message in link.messages():
            assert message.payload == b"over tls"
            assert link.ack([message.ref]) == 1
            break


async def test_wrong_password_is_retried_not_raised(
    tls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.ingest")
    settings = make_settings(
        tls_broker.broker,
        site=unique("site"),
        ca_file=str(tls_broker.ca),
        cert_file=str(tls_broker.cert),
        key_file=str(tls_broker.key),
        username=USER,
        password="wrong",
        reconnect_max_s=0.05,
    )
    async with asyncio.timeout(WAIT_S), MqttLink(settings, Metrics()) as link:
        assert not await link.wait_connected(timeout_s=0.5)
    unreachable = [r for r in caplog.records if r.getMessage() == "broker unreachable, retrying"]
    assert len(unreachable) == 1
    assert "wrong" not in caplog.text  # the password never reaches the logs


def test_unreadable_tls_files_are_a_clear_error(tmp_path: Path, tls_broker: TlsBroker) -> None:
    settings = make_settings(
        tls_broker.broker,
        site="s",
        ca_file=str(tls_broker.ca),
        cert_file=str(tmp_path / "missing.crt"),
        key_file=str(tmp_path / "missing.key"),
    )
    with pytest.raises(BrokerError, match="TLS files"):
        MqttLink(settings, Metrics())


async def test_client_certificate_without_ca_file_still_means_tls(tls_broker: TlsBroker) -> None:
    """cert_file/key_file alone must never fall back to plaintext with the password."""
    first_bytes = bytearray()
    received = asyncio.Event()

    async def capture(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first_bytes.extend(await reader.read(4096))
        received.set()
        writer.close()

    server = await asyncio.start_server(capture, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = make_settings(
        Address("127.0.0.1", port),
        site=unique("site"),
        cert_file=str(tls_broker.cert),
        key_file=str(tls_broker.key),
        username=USER,
        password=PASSWORD,
    )
    assert settings.mqtt.use_tls
    async with server, asyncio.timeout(WAIT_S), MqttLink(settings, Metrics()):
        await received.wait()
    assert first_bytes[:1] == b"\x16"  # a TLS handshake record, not an MQTT CONNECT (0x10)
    assert PASSWORD.encode() not in first_bytes
