"""The simulated fleet as an OPC UA server (asyncua): every asset an object, every sensor
a Double variable whose value, source timestamp included, follows the simulator stream.

Node ids are strings in the simulator's namespace (:data:`NAMESPACE`, index 2):
``ns=2;s=<asset>.<sensor>``, e.g. ``ns=2;s=pump-001.bearing_temp_c``;
:meth:`FleetServer.node_ids` lists them in the shape of ``[[opcua.endpoints]] assets``.

Security is configurable: no security, or Basic256Sha256 (Sign or SignAndEncrypt) with
the server's certificate and key, and optionally the client certificates it accepts
(any other is refused with BadCertificateUntrusted). :func:`make_certificates` writes a
self-signed server and client pair (made with ``cryptography``) for tests and demos.

Python API::

    certs = make_certificates(Path("pki"))
    report = serve_fleet_opcua(FleetConfig(...), endpoint="opc.tcp://127.0.0.1:4840",
                               security=ServerSecurity.from_certificates(certs),
                               pacing=Pacing(60))
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from simulators.fleet import FleetConfig, fleet_plan, stream_fleet
from simulators.payloads import decode_samples
from simulators.publisher import PublishResult
from simulators.stream import Pacing, ProgressCallback, RunReport, TruthTable, finish_run

if TYPE_CHECKING:
    from asyncua import ua
    from asyncua.common.node import Node
    from asyncua.server.server import Server
    from asyncua.server.user_managers import UserManager

NAMESPACE: Final = "urn:edgewatch:simulator"
SERVER_URI: Final = "urn:edgewatch:simulator:server"
CLIENT_URI: Final = "urn:edgewatch:client"
DEFAULT_ENDPOINT: Final = "opc.tcp://127.0.0.1:4840"
#: Most a write from the stream's thread waits for the server's loop.
WRITE_TIMEOUT_S: Final = 10.0
_MS_PER_S: Final = 1000
_CERT_DAYS: Final = 365


@dataclass(frozen=True, slots=True)
class Certificates:
    """Paths of a generated server and client certificate pair (DER) and keys (PEM)."""

    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(
    directory: Path,
    *,
    server_uri: str = SERVER_URI,
    client_uri: str = CLIENT_URI,
    hostname: str | None = None,
) -> Certificates:
    """Self-signed OPC UA application instance certificates (RSA 2048, SHA-256), with the
    application URI and host names (``hostname``, default this host's name, and
    localhost) in subjectAltName and the key usages Part 6 asks for."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = Certificates(
        directory / "server_cert.der",
        directory / "server_key.pem",
        directory / "client_cert.der",
        directory / "client_key.pem",
    )
    hosts = sorted({hostname or socket.gethostname(), "localhost"})
    _write_certificate(paths.server_cert, paths.server_key, server_uri, hosts, server=True)
    _write_certificate(paths.client_cert, paths.client_key, client_uri, hosts, server=False)
    return paths


def _write_certificate(
    cert_path: Path, key_path: Path, uri: str, hosts: Sequence[str], server: bool
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(
                NameOID.COMMON_NAME, "edgewatch " + ("server" if server else "client")
            ),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgewatch simulator"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=_CERT_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri), *(x509.DNSName(h) for h in hosts)]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)


@dataclass(frozen=True, slots=True)
class ServerSecurity:
    """The server's certificate and key, the message security it offers, and the client
    certificates it accepts (None: any client certificate the channel proves)."""

    cert_file: Path
    key_file: Path
    policy: str = "Basic256Sha256"
    modes: tuple[str, ...] = ("SignAndEncrypt",)
    trusted_clients: tuple[Path, ...] | None = None

    @classmethod
    def from_certificates(cls, certs: Certificates, *, trust_client: bool = True) -> ServerSecurity:
        return cls(
            certs.server_cert,
            certs.server_key,
            trusted_clients=(certs.client_cert,) if trust_client else None,
        )


@dataclass
class FleetServer:
    """An asyncua server exposing ``sensors`` (asset -> sensor names) as variables.

    ``start``/``stop``/``write`` run on the server's event loop.
    """

    endpoint: str
    sensors: Mapping[str, Sequence[str]]
    security: ServerSecurity | None = None
    #: User name -> password; set: a session needs one of them (anonymous refused).
    users: Mapping[str, str] | None = None
    _server: Server | None = None
    _nodes: dict[tuple[str, str], Node] = field(default_factory=dict)
    #: Values written (one per sensor per sample).
    writes: int = 0

    async def start(self) -> None:
        from asyncua import ua
        from asyncua.server.server import Server
        from asyncua.ua.status_codes import StatusCodes

        server = Server(user_manager=None if self.users is None else _user_manager(self.users))
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("edgewatch simulated fleet")
        await server.set_application_uri(SERVER_URI)
        if self.security is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            await self._secure(server, self.security)
        if self.users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        index = await server.register_namespace(NAMESPACE)
        objects = server.nodes.objects
        for asset, names in self.sensors.items():
            folder = await objects.add_object(f"ns={index};s={asset}", asset)
            for sensor in names:
                variable = await folder.add_variable(
                    f"ns={index};s={asset}.{sensor}",
                    sensor,
                    ua.Variant(0.0, ua.VariantType.Double),
                )
                # No sample yet: what OPC UA says of a source that has not delivered.
                await server.write_attribute_value(
                    variable.nodeid,
                    ua.DataValue(
                        Value=ua.Variant(0.0, ua.VariantType.Double),
                        StatusCode=ua.StatusCode(ua.UInt32(StatusCodes.BadWaitingForInitialData)),
                    ),
                )
                self._nodes[asset, sensor] = variable
        await server.start()
        self._server = server

    async def _secure(self, server: Server, security: ServerSecurity) -> None:
        from asyncua import ua
        from asyncua.common.utils import ServiceError
        from asyncua.ua.status_codes import StatusCodes
        from cryptography import x509

        server.set_security_policy(
            [getattr(ua.SecurityPolicyType, f"{security.policy}_{mode}") for mode in security.modes]
        )
        await server.load_certificate(str(security.cert_file))
        await server.load_private_key(str(security.key_file))
        if security.trusted_clients is None:
            return
        trusted = {
            x509.load_der_x509_certificate(path.read_bytes()).fingerprint(_sha256())
            for path in security.trusted_clients
        }

        async def validate(cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
            if cert.fingerprint(_sha256()) not in trusted:
                raise ServiceError(StatusCodes.BadCertificateUntrusted)

        server.set_certificate_validator(validate)

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1].split("/", 1)[0])

    def node_ids(self) -> dict[str, dict[str, str]]:
        """``[[opcua.endpoints]] assets`` for this server: asset -> sensor -> node id."""
        return node_ids(self.sensors)

    async def write(
        self,
        asset: str,
        ts_ms: int,
        values: Mapping[str, object],
        *,
        status: Mapping[str, int] | None = None,
    ) -> None:
        """Set the asset's sensors to ``values`` sampled at ``ts_ms`` (source timestamp);
        ``status`` gives a sensor a status code other than Good (e.g. BadSensorFailure)."""
        from asyncua import ua
        from asyncua.ua.status_codes import StatusCodes

        assert self._server is not None, "start the server first"
        source = ua.DateTime.fromtimestamp(ts_ms / _MS_PER_S, dt.UTC)
        now = ua.DateTime.now(dt.UTC)
        for sensor, value in values.items():
            code = (status or {}).get(sensor)
            data = ua.DataValue(
                Value=ua.Variant(value, _variant_type(value)),
                StatusCode=ua.StatusCode(ua.UInt32(StatusCodes.Good if code is None else code)),
                SourceTimestamp=source,
                ServerTimestamp=now,
            )
            await self._server.write_attribute_value(self._nodes[asset, sensor].nodeid, data)
            self.writes += 1

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            # asyncua closes its clients' connections before it stops listening: a
            # client that reconnects in between keeps a connection open that the stop
            # then waits on. Stop listening first.
            listening = getattr(server.bserver, "_server", None)
            if isinstance(listening, asyncio.AbstractServer):
                listening.close()
            await server.stop()


def _user_manager(users: Mapping[str, str]) -> UserManager:
    """asyncua's user manager for a fixed table of users."""
    from asyncua.crypto.permission_rules import User, UserRole
    from asyncua.server.user_managers import UserManager

    table = dict(users)

    class Users(UserManager):
        def get_user(
            self,
            iserver: Any,
            username: str | None = None,
            password: str | None = None,
            certificate: Any = None,
        ) -> User | None:
            if username is None or table.get(username) != password:
                return None
            return User(role=UserRole.User, name=username)

    return Users()


def _variant_type(value: object) -> ua.VariantType:
    from asyncua import ua

    if isinstance(value, bool):
        return ua.VariantType.Boolean
    if isinstance(value, int):
        return ua.VariantType.Int64
    if isinstance(value, str):
        return ua.VariantType.String
    return ua.VariantType.Double


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def node_ids(sensors: Mapping[str, Iterable[str]]) -> dict[str, dict[str, str]]:
    """Asset -> sensor -> the simulator's node id of that sensor."""
    return {
        asset: {sensor: f"ns=2;s={asset}.{sensor}" for sensor in names}
        for asset, names in sensors.items()
    }


def fleet_sensors(config: FleetConfig) -> dict[str, tuple[str, ...]]:
    """Every simulated asset's sensors, as the fleet publishes them."""
    return {spec.asset: machine.sensors for machine, spec in fleet_plan(config)}


class ServerThread:
    """A :class:`FleetServer` on an event loop of its own thread, so that the simulator's
    synchronous stream can write to it."""

    def __init__(self, server: FleetServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.call(self.server.start(), timeout_s=60.0)

    def call(self, coro: Any, timeout_s: float = WRITE_TIMEOUT_S) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout_s)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.call(self.server.stop(), timeout_s=30.0)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()


class OpcUaSink:
    """A :class:`~simulators.publisher.MessageSink` that writes each stream message (topic:
    the asset's name) into the server's variables, one write per sample."""

    def __init__(self, server: ServerThread) -> None:
        self._server = server
        self.result = PublishResult()
        self._started = time.monotonic()

    def publish(self, seq: int, topic: str, payload: bytes, readings: int = 1) -> bool:
        self.result.attempted += 1
        try:
            for ts_ms, values in decode_samples(payload):
                self._server.call(self._server.server.write(topic, ts_ms, values))
        except Exception as exc:  # a write the server refused is a message not sent
            self.result.errors.append(f"{topic}: {exc!r}"[:200])
            return False
        self.result.sent += 1
        self.result.readings_sent += readings
        self.result.elapsed_s = time.monotonic() - self._started
        return True

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        if stop is not None:
            return stop.wait(seconds)
        time.sleep(seconds)  # pacing of the simulated stream
        return False


def serve_fleet_opcua(
    config: FleetConfig,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    security: ServerSecurity | None = None,
    pacing: Pacing | None = None,
    count: int | None = None,
    truth_path: str | Path | None = None,
    on_progress: ProgressCallback | None = None,
    on_ready: Callable[[FleetServer], None] | None = None,
    stop: threading.Event | None = None,
    linger_s: float = 0.0,
    server: ServerThread | None = None,
) -> RunReport:
    """Serve the simulated fleet on ``endpoint`` while streaming it into the variables.

    ``on_ready`` is called once the server listens, before the first sample;
    ``linger_s`` keeps serving the last values that long after the stream ends (so a
    client sees the final publish). ``server``: one already started (for the fleet's
    sensors), which this closes at the end like its own.
    """
    if server is None:
        server = ServerThread(FleetServer(endpoint, fleet_sensors(config), security))
        server.start()
    truth = TruthTable() if truth_path else None
    try:
        if on_ready is not None:
            on_ready(server.server)
        sink = OpcUaSink(server)
        stats = stream_fleet(
            config,
            sink,
            topic_template="{asset}",
            pacing=pacing,
            count=count,
            truth=truth,
            on_progress=on_progress,
            stop=stop,
        )
        if linger_s > 0:
            sink.wait(linger_s, stop)
    finally:
        server.close()
    return finish_run(stats, sink.result, truth=truth, truth_path=truth_path, bad_record_path=None)


def agent_config(
    endpoint: str,
    sensors: Mapping[str, Iterable[str]],
    *,
    security_mode: str | None = None,
    certs: Certificates | None = None,
    sampling_interval_ms: float = 1000.0,
    publishing_interval_ms: float = 1000.0,
    queue_size: int = 10,
) -> str:
    """The agent's ``[opcua]`` settings (TOML) that read this simulator's fleet.

    ``sampling_interval_ms`` is the fleet's sample spacing in data time (the grouping
    span); a sped-up fleet needs a ``queue_size`` that holds the samples of one
    ``publishing_interval_ms`` of wall time.
    """
    lines = [
        "[opcua]",
        "enabled = true",
        f"sampling_interval_ms = {sampling_interval_ms!r}",
        f"publishing_interval_ms = {publishing_interval_ms!r}",
        f"queue_size = {queue_size}",
        "",
        "[[opcua.endpoints]]",
        f"url = {_toml(endpoint)}",
    ]
    if security_mode is not None:
        assert certs is not None, "security needs the certificates"
        lines += [
            'security_policy = "Basic256Sha256"',
            f"security_mode = {_toml(security_mode)}",
            f"cert_file = {_toml(str(certs.client_cert.resolve()))}",
            f"key_file = {_toml(str(certs.client_key.resolve()))}",
            f"server_cert_file = {_toml(str(certs.server_cert.resolve()))}",
            f"application_uri = {_toml(CLIENT_URI)}",
        ]
    for asset, nodes in node_ids(sensors).items():
        lines += ["", f"[opcua.endpoints.assets.{_toml(asset)}]"]
        lines += [f"{_toml(sensor)} = {_toml(node)}" for sensor, node in nodes.items()]
    return "\n".join(lines) + "\n"


def _toml(text: str) -> str:
    # A JSON string of printable ASCII is a TOML basic string.
    return orjson.dumps(text).decode()
