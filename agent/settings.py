"""The one typed settings model of edgewatch.

Precedence, lowest to highest: built-in defaults, a TOML file (``--config PATH`` or
``EDGEWATCH_CONFIG``), ``EDGEWATCH_*`` environment variables (sections nested with
``__``, e.g. ``EDGEWATCH_MQTT__PORT=1884``), then command-line flags. Unknown keys are
errors everywhere, so a typo never silently falls back to a default.

Defaults run out of the box on a laptop: data under ``./edgewatch-data``, a broker on
127.0.0.1:1883, a "cloud" folder inside the data directory.
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import os
import re
import socket
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from agent.domain import name_problem
from agent.errors import ConfigError

ENV_PREFIX = "EDGEWATCH_"
CONFIG_ENV = "EDGEWATCH_CONFIG"
REDACTED = "********"


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("is not a port (1-65535)")
    return value


def _identifier(value: str) -> str:
    # Site and agent names become MQTT topic levels, object-store key parts and log
    # text: the rule for asset names at ingest, and no spaces.
    if name_problem(value) is not None or " " in value:
        raise ValueError(
            "must be a non-empty name of at most 128 characters without '/', '#', '+', "
            "spaces or control characters, and not '.' or '..'"
        )
    return value


def split_listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (host 127.0.0.1) as ``(host, port)``."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9108)")
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address (e.g. 127.0.0.1:9108)") from None
    return host, _port(int(port_text))


def _listen_address(value: str | None) -> str | None:
    if value is None:
        return None
    host, port = split_listen_address(value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


Port = Annotated[int, AfterValidator(_port)]
Identifier = Annotated[str, AfterValidator(_identifier)]
PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class _Section(BaseModel):
    # A ValidationError printed as it is (not through load_settings) must not show
    # the section it failed on: that can hold the broker password.
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, frozen=True, hide_input_in_errors=True
    )


class IdentitySettings(_Section):
    """Who this gateway is: names used in topics, object keys and records."""

    site: Identifier = Field("demo", description="Plant or site name (topic level).")
    agent: Identifier = Field(
        default_factory=lambda: _identifier_or_default(socket.gethostname()),
        description="This gateway's name (default: the host name).",
    )


def _identifier_or_default(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".")
    return cleaned or "gateway"


class MqttSettings(_Section):
    """Broker connection, topics and delivery."""

    host: str = Field("127.0.0.1", min_length=1, description="Broker host name or address.")
    port: Port = Field(1883, description="Broker port (8883 is usual with TLS).")
    client_id: str | None = Field(
        None,
        description="Stable client id for the persistent session (default: edgewatch-<agent>).",
    )
    username: str | None = Field(None, description="User name, if the broker requires one.")
    password: SecretStr | None = Field(None, description="Password (never logged or shown).")
    tls: bool = Field(False, description="Use TLS; true when ca_file or cert_file/key_file is set.")
    ca_file: Path | None = Field(None, description="CA certificate (PEM) to verify the broker.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    key_file: Path | None = Field(None, description="Client private key (PEM) for mutual TLS.")
    telemetry_topic: str = Field(
        "edgewatch/{site}/{asset}/telemetry",
        description="Template of the topics sensor readings arrive on.",
    )
    alerts_topic: str = Field(
        "edgewatch/{site}/{asset}/alerts", description="Template of the alert topics."
    )
    status_topic: str = Field(
        "edgewatch/{site}/{agent}/status", description="Template of the agent status topic."
    )
    qos: Literal[0, 1] = Field(1, description="QoS of subscriptions and alert publishes.")
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = Field(
        30, description="MQTT keepalive interval in seconds."
    )
    reconnect_max_s: PositiveFloat = Field(
        60.0, description="Upper bound of the reconnect backoff in seconds."
    )
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = Field(
        1000, description="Unacknowledged QoS 1 messages the broker may send at once."
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT version; auto tries 5 and falls back to 3.1.1."
    )
    session_expiry_s: Annotated[int, Field(ge=0)] = Field(
        7 * 86400,
        description="How long the broker keeps our session and queued QoS 1 messages (MQTT 5).",
    )
    health_interval_s: Annotated[float, Field(ge=1, le=3600)] = Field(
        30.0, description="Seconds between health messages on the status topic."
    )

    @field_validator("telemetry_topic", "alerts_topic")
    @classmethod
    def _asset_template(cls, value: str) -> str:
        return _check_template(value, required=("{site}", "{asset}"))

    @field_validator("status_topic")
    @classmethod
    def _status_template(cls, value: str) -> str:
        return _check_template(value, required=("{site}", "{agent}"))

    @model_validator(mode="after")
    def _mtls_pair(self) -> MqttSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together for mutual TLS: set both or none")
        return self

    @property
    def use_tls(self) -> bool:
        # A client certificate only means something inside TLS; without a CA file the
        # system's CAs verify the broker. Plaintext would send the password in clear.
        return self.tls or self.ca_file is not None or self.cert_file is not None


def _check_template(value: str, *, required: tuple[str, ...]) -> str:
    missing = [part for part in required if part not in value]
    if missing:
        raise ValueError(f"must contain {' and '.join(missing)}")
    if any(c in value for c in "#+"):
        raise ValueError("must not contain MQTT wildcards ('#', '+')")
    return value


class IngestSettings(_Section):
    """Validation of incoming readings and how streams are cut into windows."""

    max_payload_bytes: Annotated[int, Field(ge=64)] = Field(
        65536,
        description=(
            "Larger messages are dead-lettered as too_large. Over MQTT 5 the broker is "
            "also told (Maximum Packet Size) not to send packets over this plus 4 KiB of "
            "headers: it drops them instead."
        ),
    )
    max_batch: Annotated[int, Field(ge=1, le=100000)] = Field(
        1000, description="Most readings in one batch message."
    )
    max_future_s: Annotated[float, Field(ge=0)] = Field(
        300.0, description="Readings further ahead of the gateway clock are ts_future."
    )
    max_past_s: Annotated[float, Field(gt=0)] = Field(
        30 * 86400.0, description="Readings older than this are ts_past."
    )
    reorder_samples: Annotated[int, Field(ge=0, le=1000)] = Field(
        4, description="Late readings up to this many samples back are put in order."
    )
    gap_factor: Annotated[float, Field(gt=1)] = Field(
        10.0, description="A gap longer than this many sample periods restarts the window."
    )
    max_assets: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        1000,
        description=(
            "Most assets held in memory (each holds its window buffer, and its baseline "
            "samples until commissioned). A new asset beyond it evicts the least recently "
            "seen one still learning or collecting (its stored readings stay); when all "
            "are commissioning or monitoring, its messages are dead letters "
            "(too_many_assets)."
        ),
    )


class SparkplugSettings(_Section):
    """Sparkplug B ingest (docs/sparkplug.md): the agent as a host application of one group.

    When enabled the agent subscribes to ``spBv1.0/<group_id>/#`` instead of the JSON
    telemetry topic. Device data (DDATA) becomes readings of the asset named by
    ``device_asset``, node data (NDATA) of the asset named by ``node_asset``; metric
    names are the sensor names (a profile's ``rename`` maps them).
    """

    enabled: bool = Field(False, description="Ingest Sparkplug B instead of JSON telemetry.")
    group_id: str = Field(
        "edgewatch", description="Sparkplug group whose edge nodes are read (one topic level)."
    )
    device_asset: str = Field(
        "{device}",
        description=(
            "Asset name of a device's data; placeholders {group}, {node} and {device} "
            "(e.g. {node}.{device} where device ids repeat across nodes)."
        ),
    )
    node_asset: str = Field(
        "{node}", description="Asset name of a node's own data; placeholders {group} and {node}."
    )
    rebirth_interval_s: Annotated[float, Field(ge=0.1, le=3600)] = Field(
        10.0,
        description=(
            "Least time between two Rebirth requests (NCMD) to one edge node while its "
            "births are awaited."
        ),
    )
    publish: bool = Field(
        False,
        description=(
            "Publish each asset's results as a Sparkplug B edge node of group_id "
            "(NBIRTH/DBIRTH/DDATA, NDEATH as Will), on a connection of its own."
        ),
    )
    edge_node_id: str | None = Field(
        None, description="Edge node id of the published results (default: identity.agent)."
    )
    publish_max_pending: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        1000,
        description=(
            "Assets whose unsent values wait for a slow broker; past it the oldest "
            "asset's are dropped and counted (Sparkplug data is QoS 0)."
        ),
    )

    @field_validator("edge_node_id")
    @classmethod
    def _edge_node(cls, value: str | None) -> str | None:
        if value is not None and name_problem(value) is not None:
            raise ValueError("must be one topic level: no '/', '#', '+' or control characters")
        return value

    @field_validator("group_id")
    @classmethod
    def _group(cls, value: str) -> str:
        if name_problem(value) is not None:
            raise ValueError("must be one topic level: no '/', '#', '+' or control characters")
        return value

    @field_validator("device_asset")
    @classmethod
    def _device_template(cls, value: str) -> str:
        return _check_name_template(value, ("{group}", "{node}", "{device}"), "{device}")

    @field_validator("node_asset")
    @classmethod
    def _node_template(cls, value: str) -> str:
        return _check_name_template(value, ("{group}", "{node}"), "{node}")


def _check_name_template(value: str, known: tuple[str, ...], required: str) -> str:
    if required not in value:
        raise ValueError(f"must contain {required}")
    rest = value
    for placeholder in known:
        rest = rest.replace(placeholder, "")
    if "{" in rest or "}" in rest:
        raise ValueError(f"knows only the placeholders {', '.join(known)}")
    return value


OpcUaPolicy = Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"]


class OpcUaEndpoint(_Section):
    """One OPC UA server and the variables read from it (``[[opcua.endpoints]]``)."""

    url: str = Field(
        ..., description="Server endpoint, e.g. opc.tcp://plc-1:4840 (user:password@ not allowed)."
    )
    security_policy: OpcUaPolicy = Field(
        "None", description="None, Basic256Sha256, Aes128Sha256RsaOaep or Aes256Sha256RsaPss."
    )
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = Field(
        "None", description="Message security: None (policy None only), Sign or SignAndEncrypt."
    )
    cert_file: Path | None = Field(
        None, description="This client's application instance certificate (DER or PEM)."
    )
    key_file: Path | None = Field(None, description="Private key of cert_file (PEM or DER).")
    server_cert_file: Path | None = Field(
        None,
        description=(
            "The server's certificate (DER or PEM), trusted as given: messages are signed "
            "and encrypted for it, so no other server can answer."
        ),
    )
    application_uri: str = Field(
        "urn:edgewatch:client",
        min_length=1,
        description="This client's application URI; must be the URI in cert_file.",
    )
    username: str | None = Field(None, description="User name, if the server requires one.")
    password: SecretStr | None = Field(None, description="Password (never logged or shown).")
    assets: dict[str, dict[str, str]] = Field(
        ...,
        description=(
            "Asset name -> {sensor name -> node id}, e.g. "
            '{ "pump-1" = { bearing_temp_c = "ns=2;s=Pump1.BearingTemp" } }.'
        ),
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith("opc.tcp://") or "@" in value:
            raise ValueError("must be opc.tcp://HOST:PORT[/PATH], credentials in username/password")
        return value

    @field_validator("assets")
    @classmethod
    def _assets(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        if not value:
            raise ValueError("must name at least one asset")
        for asset, nodes in value.items():
            problem = name_problem(asset)
            if problem is not None:
                raise ValueError(f"asset {asset[:64]!r} {problem}")
            if not nodes:
                raise ValueError(f"asset {asset!r} has no sensors")
            for sensor, node in nodes.items():
                if not sensor or not node.strip():
                    raise ValueError(
                        f"asset {asset!r}: sensor names and node ids must not be empty"
                    )
        return value

    @model_validator(mode="after")
    def _security(self) -> OpcUaEndpoint:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                "security_policy None goes with security_mode None, any other policy "
                "with Sign or SignAndEncrypt"
            )
        files = (self.cert_file, self.key_file, self.server_cert_file)
        if self.security_policy != "None" and None in files:
            raise ValueError(
                f"security_policy {self.security_policy} needs cert_file, key_file and "
                "server_cert_file"
            )
        if self.password is not None and self.username is None:
            raise ValueError("password needs username")
        return self

    @property
    def secure(self) -> bool:
        return self.security_policy != "None"


class OpcUaSettings(_Section):
    """OPC UA ingest (docs/opcua.md): monitored items on one or more servers, as readings.

    Runs beside the MQTT telemetry subscriber (or Sparkplug B): each endpoint's
    variables are sampled by the server and their changes become readings of the
    assets named in ``assets``, through the same validation and dead letters.
    """

    enabled: bool = Field(
        False, description="Read the endpoints' variables (needs edgewatch[opcua])."
    )
    endpoints: list[OpcUaEndpoint] = Field(
        default_factory=list,
        description="Servers to read ([[opcua.endpoints]] tables; keys below).",
    )
    sampling_interval_ms: Annotated[float, Field(ge=0, le=3_600_000)] = Field(
        1000.0,
        description=(
            "How often the server samples each variable (0: as fast as it can); also "
            "the span within which an asset's changes make one reading."
        ),
    )
    publishing_interval_ms: Annotated[float, Field(gt=0, le=3_600_000)] = Field(
        1000.0, description="How often the server sends the changes it sampled."
    )
    queue_size: Annotated[int, Field(ge=1, le=10000)] = Field(
        10,
        description=(
            "Samples the server keeps per variable between two publishes (oldest "
            "discarded beyond it); at least publishing/sampling interval."
        ),
    )
    timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        5.0, description="Bound on each request to a server (connect included)."
    )
    reconnect_initial_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        1.0, description="First wait before reconnecting to a server that went away."
    )
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, description="Longest wait between reconnect attempts (the wait doubles)."
    )

    @model_validator(mode="after")
    def _complete(self) -> OpcUaSettings:
        if self.enabled and not self.endpoints:
            raise ValueError("enabled needs at least one [[opcua.endpoints]]")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be at least reconnect_initial_s")
        return self


class StorageSettings(_Section):
    """Where records live and how much disk they may use."""

    data_dir: Path = Field(Path("edgewatch-data"), description="State directory.")
    database: Path | None = Field(
        None, description="SQLite database file (default: <data_dir>/edgewatch.db)."
    )
    retention_days: Annotated[float, Field(gt=0, le=3650)] = Field(
        7.0, description="Raw readings and dead letters older than this are deleted."
    )
    prediction_retention_days: Annotated[float, Field(gt=0, le=3650)] = Field(
        90.0, description="Predictions, closed alerts and events older than this are deleted."
    )
    disk_budget_mb: Annotated[int, Field(ge=16)] = Field(
        1024, description="Upper bound for the database plus the sync outbox, in MB."
    )
    commit_interval_ms: Annotated[int, Field(ge=10, le=60000)] = Field(
        200, description="Under load, a write batch is committed at least this often."
    )
    commit_max_wait_ms: Annotated[int, Field(ge=10, le=600_000)] = Field(
        10_000,
        description=(
            "At low rates a write batch waits up to this long to gather 2,500 rows: "
            "every commit rewrites a disk page per asset, so fewer commits spare SD "
            "cards (50 pumps at 1 Hz: 53 GB written a day at 200 ms, 3.8 GB at 10 s). "
            "Messages are acknowledged after their commit; alerts are published at "
            "once. Set it to commit_interval_ms to commit as often as under load."
        ),
    )
    commit_max_rows: Annotated[int, Field(ge=1, le=100000)] = Field(
        25_000,
        description=(
            "A write batch is committed when it holds this many rows (at 250,000 "
            "readings/s that is 10 commits/s; batch payloads are held as columns, "
            "about 70 bytes a reading)."
        ),
    )
    keep_readings: bool = Field(True, description="Store raw readings (for retraining).")
    dead_letter_max_bytes: Annotated[int, Field(ge=0, le=1_048_576)] = Field(
        4096, description="Raw payload bytes kept per dead letter."
    )

    @property
    def database_path(self) -> Path:
        return self.database if self.database is not None else self.data_dir / "edgewatch.db"


class Backend(StrEnum):
    TORCH = "torch"
    ONNX = "onnx"
    AUTO = "auto"


class ModelSettings(_Section):
    """Which model bundle runs and how predictions become alerts."""

    bundle: Path | None = Field(
        None,
        description="Model bundle directory or .tar.gz, or the name of a shipped bundle "
        "(pump, cmapss-fd001); default: the built-in pump model.",
    )
    window: PositiveInt | None = Field(None, description="Window length override (samples).")
    hop: PositiveInt | None = Field(None, description="Hop override (samples between windows).")
    anomaly_threshold: PositiveFloat | None = Field(
        None, description="Normalised anomaly score threshold override."
    )
    rul_alert_below: PositiveFloat | None = Field(
        None, description="Raise an alert when the RUL estimate drops below this."
    )
    backend: Backend = Field(
        Backend.AUTO,
        description=(
            "Inference backend: torch, onnx (ONNX Runtime; the agent process never imports "
            "torch and commissions assets in short-lived child processes), or auto (onnx "
            "when the bundle has ONNX graphs and onnxruntime is installed, else torch)."
        ),
    )
    threads: Annotated[int, Field(ge=1, le=64)] = Field(1, description="Inference threads.")
    batch_max: Annotated[int, Field(ge=1, le=4096)] = Field(
        256, description="Most windows per inference batch."
    )
    batch_wait_ms: Annotated[int, Field(ge=0, le=10000)] = Field(
        20, description="Longest wait to fill an inference batch."
    )
    commission_samples: Annotated[int, Field(ge=50, le=100000)] = Field(
        1440,
        description=(
            "Samples of a new asset used as its healthy baseline (1440: one day at one "
            "sample a minute, so the baseline sees day and night operation)."
        ),
    )
    alert_open_after: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        None, description="Anomalous windows in a row that open an alert (default: bundle's)."
    )
    alert_close_after: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        None, description="Windows in a row below the closing level that close it (bundle's)."
    )
    alert_close_ratio: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="Closing level as a fraction of the threshold (default: bundle's)."
    )
    commission_cpu_budget_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, description="CPU seconds one asset's commissioning may spend training."
    )
    max_commissioning: Annotated[int, Field(ge=1, le=8)] = Field(
        1, description="Assets commissioned at the same time."
    )
    incident_quiet_s: Annotated[float, Field(ge=0, le=30 * 86400)] = Field(
        # A shift: a developing fault comes and goes with load for hours before it
        # stays; re-alarming within a shift is the same problem to the operator.
        8 * 3600.0,
        description=(
            "An anomaly incident closes only after this long (reading time while the "
            "machine is judged) without an alarm; an alert that re-opens sooner "
            "continues the same incident."
        ),
    )


LEARN: Final = "learn"
#: Readings whose sensor sets vote on an asset's set (``sensors = "learn"``).
DEFAULT_LEARN_READINGS = 20


class ProfileSettings(_Section):
    """How assets whose names match ``match`` are monitored (``[[profiles]]``).

    The first profile whose glob matches an asset wins; an asset no profile matches
    gets these defaults: its sensor set is learnt from its first readings, and it is
    started from the model bundle when its sensors include the bundle's, from scratch
    (its own autoencoder on its own baseline) otherwise.
    """

    name: str | None = Field(None, description="Label shown by `config show` (default: match).")
    match: str = Field("*", min_length=1, description="Asset name glob, e.g. `pump-*`.")
    sensors: Literal["learn"] | list[str] = Field(
        "learn",
        description=(
            "The asset's sensors after renames, or `learn`: the set seen in a stable "
            "majority of its first `learn_readings` readings."
        ),
    )
    learn_readings: Annotated[int, Field(ge=3, le=10000)] = Field(
        DEFAULT_LEARN_READINGS, description="Readings the learnt sensor set is voted on."
    )
    rename: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'Incoming sensor name -> name used by edgewatch, e.g. `{ Current = "current_a" }`.'
        ),
    )
    sample_period_s: PositiveFloat | None = Field(
        None,
        description="Expected seconds between readings (default: estimated from the stream).",
    )
    bundle: Literal["auto", "none"] = Field(
        "auto",
        description=(
            "auto: start from the model bundle ([model] bundle) when the asset has all its "
            "sensors; none: always learn this asset's model from scratch."
        ),
    )
    rul: bool = Field(True, description="Report the bundle's RUL estimate (where it has one).")
    commission_samples: Annotated[int, Field(ge=50, le=100000)] | None = Field(
        None, description="Baseline readings (default: model.commission_samples)."
    )
    anomaly_threshold: PositiveFloat | None = Field(
        None, description="Normalised anomaly threshold (default: calibrated per asset)."
    )
    alert_open_after: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        None, description="Anomalous windows in a row that open an alert (default: model's)."
    )
    alert_close_after: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        None, description="Windows below the closing level that clear it (default: model's)."
    )
    alert_close_ratio: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="Closing level as a fraction of the threshold (default: model's)."
    )
    incident_quiet_s: Annotated[float, Field(ge=0, le=30 * 86400)] | None = Field(
        None, description="Quiet time that ends an incident (default: model.incident_quiet_s)."
    )
    run_sensor: str | None = Field(
        None,
        min_length=1,
        description=(
            "For an asset learning its own model: the sensor that says the machine runs "
            "(motor current, speed). A window where it drops below run_min_fraction of "
            "its baseline median is not judged: a stopped machine is not assessed "
            "(a bundle's own run condition applies to assets it covers)."
        ),
    )
    run_min_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.2, description="Share of the run sensor's baseline median that counts as running."
    )

    @field_validator("match")
    @classmethod
    def _glob(cls, value: str) -> str:
        if any(c in value for c in "/#+"):
            raise ValueError("must be an asset name glob without '/', '#' or '+'")
        return value

    @field_validator("sensors", mode="before")
    @classmethod
    def _sensor_list(cls, value: object) -> object:
        if isinstance(value, str) and value != LEARN:
            raise ValueError('must be "learn" or a list of sensor names')
        if isinstance(value, list):
            if not value or any(not name for name in value):
                raise ValueError('must be "learn" or a non-empty list of sensor names')
            if len(set(value)) != len(value):
                raise ValueError("names a sensor twice")
        return value

    @field_validator("rename")
    @classmethod
    def _renames(cls, value: dict[str, str]) -> dict[str, str]:
        targets = list(value.values())
        if any(not name for name in [*value, *targets]):
            raise ValueError("must not rename from or to an empty name")
        if len(set(targets)) != len(targets):
            raise ValueError("renames two sensors to the same name")
        return value

    @property
    def label(self) -> str:
        return self.name or self.match


class SyncSettings(_Section):
    """Upload of summaries, alerts and retraining data to object storage."""

    enabled: bool = Field(True, description="Run the uploader.")
    target: str | None = Field(
        None,
        description="file:///path or s3://bucket/prefix (default: <data_dir>/cloud folder).",
    )
    interval_s: PositiveFloat = Field(30.0, description="Seconds between drain passes.")
    summary_period_s: Annotated[int, Field(ge=10, le=86400)] = Field(
        300, description="Length of a summary period in seconds."
    )
    bandwidth_bytes_per_s: Annotated[int, Field(ge=0)] = Field(
        0, description="Upload bandwidth cap in bytes/s (0: no cap)."
    )
    concurrency: Annotated[int, Field(ge=1, le=32)] = Field(
        2, description="Uploads in flight at once."
    )
    backoff_max_s: Annotated[float, Field(ge=1, le=86400)] = Field(
        300.0, description="Longest wait between upload retries while the target fails."
    )
    retraining: bool = Field(True, description="Export retraining data (Parquet).")
    retraining_before_s: Annotated[float, Field(ge=0, le=86400)] = Field(
        600.0, description="Raw readings kept for retraining before an alert opens."
    )
    retraining_after_s: Annotated[float, Field(ge=0, le=86400)] = Field(
        600.0, description="Raw readings kept for retraining after an alert closes."
    )
    retraining_sample_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.02, description="Share of normal windows sampled for retraining."
    )
    retraining_sample_window_s: Annotated[float, Field(ge=1, le=3600)] = Field(
        60.0, description="Length of one sampled normal window in seconds."
    )
    ttl_days: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: {
            "alert": 90.0,
            "label": 90.0,
            "event": 30.0,
            "ledger": 90.0,
            "summary": 30.0,
            "retraining": 7.0,
        },
        description="Days an item may wait in the outbox, per kind, before it is dropped.",
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint URL.")
    s3_region: str | None = Field(None, description="S3 region (default from AWS env).")
    s3_access_key_id: str | None = Field(None, description="Access key (default: AWS env).")
    s3_secret_access_key: SecretStr | None = Field(
        None, description="Secret key (default: AWS env; never logged or shown)."
    )

    @field_validator("ttl_days")
    @classmethod
    def _ttl_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        known = {"alert", "label", "event", "ledger", "summary", "retraining"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"has unknown kinds {unknown} (known: {sorted(known)})")
        return value

    @field_validator("target")
    @classmethod
    def _target_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("file://", "s3://")):
            raise ValueError("must start with file:// or s3://")
        return value


class UpdateSettings(_Section):
    """Signed model updates: TUF repository, shadow probation, hot swap (docs/updates.md)."""

    enabled: bool = Field(False, description="Poll the repository for model updates.")
    repo: str | None = Field(
        None,
        description="Repository URL: file:///path, s3://bucket/prefix (endpoint, region "
        "and credentials from AWS_ENDPOINT_URL, AWS_DEFAULT_REGION and boto3's usual "
        "chain) or https://host/prefix.",
    )
    trusted_root: Path | None = Field(
        None,
        description="root.json from `edgewatch model keys init`: the keys this gateway trusts.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Verified metadata and staged bundles (default: <data_dir>/updates).",
    )
    poll_interval_s: Annotated[float, Field(ge=1, le=7 * 86400)] = Field(
        3600.0,
        description="Seconds between polls of the repository (the first is at start).",
    )
    probation_windows: Annotated[int, Field(ge=1)] = Field(
        2000,
        description="Windows a candidate scores in shadow, beside the live model, "
        "before it is judged.",
    )
    probation_s: Annotated[float, Field(ge=0)] = Field(
        3600.0, description="And at least this many seconds in shadow."
    )
    max_alert_rate_ratio: Annotated[float, Field(ge=1)] = Field(
        1.5,
        description="Largest candidate/live ratio of alerting windows (anomalous or RUL "
        "below model.rul_alert_below) on the same windows, per asset.",
    )
    alert_rate_slack: Annotated[float, Field(ge=0, le=1)] = Field(
        0.01,
        description="Share of windows the candidate may alert on beyond the ratio (a "
        "live model that never alerts would otherwise allow none).",
    )
    max_errors: Annotated[int, Field(ge=0)] = Field(
        0, description="Batches the candidate may fail to score during probation."
    )
    max_latency_ratio: Annotated[float, Field(ge=1)] = Field(
        3.0, description="Largest candidate/live ratio of scoring time per batch."
    )
    max_score_quantile_ratio: Annotated[float, Field(ge=1)] = Field(
        2.0,
        description="Largest candidate/live ratio of an asset's p50, p95 and p99 anomaly "
        "scores on the same judged windows (compared from 100 windows on).",
    )
    max_rss_growth_mb: Annotated[float, Field(gt=0)] = Field(
        128.0,
        description="Largest growth of the agent's resident memory from before the "
        "candidate is loaded to the end of its probation, in MB.",
    )
    control_interval_s: Annotated[float, Field(ge=0.1, le=60)] = Field(
        1.0,
        description="Seconds between the agent's checks of the model store's state "
        "file (`model rollback` and `model pin` take effect within it).",
    )

    @field_validator("repo")
    @classmethod
    def _repo_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("file://", "s3://", "https://", "http://")):
            raise ValueError("must start with file://, s3://, https:// or http://")
        return value

    @model_validator(mode="after")
    def _complete(self) -> UpdateSettings:
        if self.enabled and (self.repo is None or self.trusted_root is None):
            raise ValueError("enabled needs repo and trusted_root")
        return self


class LoggingSettings(_Section):
    """Log level and format."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Least severe level that is logged."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: human lines on a terminal, JSON lines otherwise."
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class MetricsSettings(_Section):
    """Prometheus metrics endpoint of ``edgewatch run`` (off unless an address is set)."""

    address: Annotated[str | None, AfterValidator(_listen_address)] = Field(
        None,
        description=(
            "HOST:PORT to serve /metrics on, e.g. 127.0.0.1:9108 (default: off). "
            "Use 0.0.0.0 only on a trusted network: the endpoint has no authentication."
        ),
    )

    @property
    def host_port(self) -> tuple[str, int] | None:
        return None if self.address is None else split_listen_address(self.address)


class DashboardSettings(_Section):
    """Local web dashboard of ``edgewatch run --http`` and ``edgewatch dashboard``."""

    address: Annotated[str | None, AfterValidator(_listen_address)] = Field(
        None,
        description=(
            "HOST:PORT to serve the dashboard on from `edgewatch run`, e.g. 127.0.0.1:8080 "
            "(default: off). On any address but loopback every page needs the token."
        ),
    )
    token: SecretStr | None = Field(
        None,
        description=(
            "Token for acknowledging and labelling alerts (and for reading on a "
            "non-loopback address); without it the dashboard is read-only. Never shown."
        ),
    )

    @property
    def host_port(self) -> tuple[str, int] | None:
        return None if self.address is None else split_listen_address(self.address)


_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "edgewatch_toml_path", default=None
)


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the TOML file chosen for this load, with errors that name the file."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ returns the whole file at once

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        return read_toml(self.path)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML config file, turning every failure into a :class:`ConfigError`."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"config file {path} does not exist"]) from None
    except IsADirectoryError:
        raise ConfigError([f"config file {path} is a directory"]) from None
    except PermissionError:
        raise ConfigError([f"config file {path} is not readable (permission denied)"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path} is not valid TOML: {exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path} is not UTF-8 text"]) from None


class Settings(BaseSettings):
    """Effective configuration of one edgewatch process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
        hide_input_in_errors=True,
    )

    identity: IdentitySettings = Field(default_factory=IdentitySettings)  # type: ignore[arg-type]
    mqtt: MqttSettings = Field(default_factory=MqttSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    sparkplug: SparkplugSettings = Field(default_factory=SparkplugSettings)  # type: ignore[arg-type]
    opcua: OpcUaSettings = Field(default_factory=OpcUaSettings)  # type: ignore[arg-type]
    storage: StorageSettings = Field(default_factory=StorageSettings)  # type: ignore[arg-type]
    model: ModelSettings = Field(default_factory=ModelSettings)  # type: ignore[arg-type]
    sync: SyncSettings = Field(default_factory=SyncSettings)  # type: ignore[arg-type]
    updates: UpdateSettings = Field(default_factory=UpdateSettings)  # type: ignore[arg-type]
    logging: LoggingSettings = Field(default_factory=LoggingSettings)  # type: ignore[arg-type]
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)  # type: ignore[arg-type]
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)  # type: ignore[arg-type]
    profiles: list[ProfileSettings] = Field(
        default_factory=list,
        description="Asset profiles ([[profiles]] tables), first match wins.",
    )

    SECTIONS: ClassVar[tuple[str, ...]] = (
        "identity",
        "mqtt",
        "ingest",
        "sparkplug",
        "opcua",
        "storage",
        "model",
        "sync",
        "updates",
        "logging",
        "metrics",
        "dashboard",
        "profiles",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: flags, then environment, then the file, then defaults.
        return (init_settings, env_settings, _TomlSource(settings_cls, _toml_path.get()))

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"edgewatch-{self.identity.agent}"

    @property
    def sync_target(self) -> str:
        if self.sync.target is not None:
            return self.sync.target
        return (self.storage.data_dir / "cloud").resolve().as_uri()

    @property
    def updates_cache_dir(self) -> Path:
        return self.updates.cache_dir or self.storage.data_dir / "updates"

    def redacted(self) -> dict[str, Any]:
        """Plain data for display: secrets replaced, paths as strings."""
        data = redact(self.model_dump(mode="json"))
        assert isinstance(data, dict)
        return data


def load_settings(
    config_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Build the effective settings or raise :class:`ConfigError` listing every problem.

    ``config_path`` falls back to ``$EDGEWATCH_CONFIG``; ``overrides`` are nested dicts
    from command-line flags and win over everything else.
    """
    env = dict(os.environ)
    if config_path is None and env.get(CONFIG_ENV):
        config_path = Path(env[CONFIG_ENV])
    problems = _unknown_env_keys(env)
    if config_path is not None:
        read_toml(config_path)  # fail early with the file's own error
    token = _toml_path.set(config_path)
    try:
        settings = Settings(**(overrides or {}))
    except ValidationError as exc:
        problems.extend(_describe(exc, env))
        raise ConfigError(problems, source=str(config_path) if config_path else None) from None
    finally:
        _toml_path.reset(token)
    if problems:
        raise ConfigError(problems, source=str(config_path) if config_path else None)
    return settings


def _unknown_env_keys(env: dict[str, str]) -> list[str]:
    # pydantic-settings ignores unknown top-level variables; a typo there would
    # otherwise silently fall back to a default.
    problems = []
    for key in sorted(env):
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV:
            continue
        section = key[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if section not in Settings.SECTIONS:
            problems.append(
                f"{key}: unknown setting (sections: {', '.join(Settings.SECTIONS)}; "
                "nest keys with __, e.g. EDGEWATCH_MQTT__PORT)"
            )
    return problems


def _describe(exc: ValidationError, env: dict[str, str]) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        loc = _location(error["loc"])
        env_key = ENV_PREFIX + "__".join(str(p).upper() for p in error["loc"])
        origin = f" (from {env_key})" if env_key in env else ""
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown key{origin}")
            continue
        if error["type"] == "missing":
            lines.append(f"{loc}: required{origin}")
            continue
        value = error.get("input")
        if any(isinstance(part, str) and is_secret_name(part) for part in error["loc"]):
            shown = REDACTED
        elif isinstance(value, dict) and error["type"] == "value_error":
            # A rule across keys (a model validator): the message names the keys, and
            # the section's values would only bury it.
            lines.append(f"{loc}: {message}{origin}")
            continue
        else:
            shown = _short(redact(value))
        lines.append(f"{loc}: {shown} {_phrase(message)}{origin}")
    return lines


# Names of credentials: "key" alone would also hide key_file (a path) and sensor
# names, so only the kinds of key that are secrets count.
_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)|secret|token|credential|(api|access|private|auth|session)_?key",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """True for a setting or input key that holds a credential (password, token, ...)."""
    return _SECRET_NAME.search(name) is not None


def redact(value: object) -> object:
    """``value`` with every credential inside it (at any depth) replaced by REDACTED.

    Error inputs are whole sections or lists of tables as the user wrote them, so a
    secret can sit anywhere below the key that failed.
    """
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and is_secret_name(key) and item is not None
            else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, SecretStr):
        return REDACTED
    return value


def _location(parts: tuple[int | str, ...]) -> str:
    # profiles.0.sensors reads better as profiles[0].sensors; pydantic also inserts the
    # name of the union member that failed (e.g. "list[str]"), which says nothing here.
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.startswith(("literal[", "list[")):
            continue
        else:
            text += f".{part}" if text else part
    return text


def _short(value: object) -> str:
    # Quote strings only where the bare text would be unreadable ('' or spaces) or
    # would break the one-line message (newlines, control characters).
    text = (
        repr(value)
        if isinstance(value, str)
        and (not value or value != value.strip() or not value.isprintable())
        else str(value)
    )
    return text if len(text) <= 60 else text[:57] + "..."


def _phrase(message: str) -> str:
    # Turn pydantic's "Input should be ..." into "is not valid: should be ...".
    if message.startswith(("is ", "must ")):
        return message
    if message.startswith("Input should be a valid "):
        return "is not " + message.removeprefix("Input should be ").split(",")[0]
    if message.startswith("Input should be "):
        return "must be " + message.removeprefix("Input should be ")
    if message.startswith("Input should be "):
        return "is not allowed: should be " + message.removeprefix("Input should be ")
    if message.startswith("Input "):
        return "is not allowed: " + message.removeprefix("Input ")
    return "is not allowed: " + message[:1].lower() + message[1:]


def _dedent(doc: str | None) -> str:
    import inspect

    return inspect.cleandoc(doc or "")


def reference_markdown() -> str:
    """The configuration reference (docs/configuration.md), generated from this model."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `edgewatch config reference` from the settings model; do not edit.",
        "Every key can be set in the TOML file (`[section]` then `key = value`), as an",
        "environment variable `EDGEWATCH_<SECTION>__<KEY>` (e.g. `EDGEWATCH_MQTT__PORT=1884`),",
        "and some by command-line flags. Precedence: defaults < file < environment < flags.",
        "",
    ]
    for section in Settings.SECTIONS:
        model: Any = Settings.model_fields[section].annotation
        if section == "profiles":
            model = ProfileSettings
            lines += ["## [[profiles]]", "", _dedent(model.__doc__), ""]
            lines += [
                "A file may hold any number of `[[profiles]]` tables; from the environment",
                "they are one JSON list, e.g.",
                '`EDGEWATCH_PROFILES=\'[{"match": "rig-*", "commission_samples": 400}]\'`.',
                "",
            ]
        else:
            assert isinstance(model, type) and issubclass(model, BaseModel)
            lines += [f"## [{section}]", "", (model.__doc__ or "").strip(), ""]
        lines += ["| key | default | description |", "|---|---|---|"]
        defaults = model.model_validate({}).model_dump(mode="json")
        for name, info in model.model_fields.items():
            default = defaults.get(name)
            if section == "identity" and name == "agent":
                shown = "host name"
            elif default is None:
                shown = "(not set)"
            else:
                text = default if isinstance(default, str) else json.dumps(default)
                shown = f"`{text}`"
            description = (info.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {shown} | {description} |")
        lines.append("")
        if section == "opcua":
            lines += _endpoint_reference()
    return "\n".join(lines)


def _endpoint_reference() -> list[str]:
    lines = ["### [[opcua.endpoints]]", "", _dedent(OpcUaEndpoint.__doc__), ""]
    lines += ["| key | default | description |", "|---|---|---|"]
    for name, info in OpcUaEndpoint.model_fields.items():
        default = info.get_default(call_default_factory=True)
        shown = "(required)" if info.is_required() else "(not set)" if default is None else ""
        if not shown:
            shown = f"`{default if isinstance(default, str) else json.dumps(default)}`"
        description = (info.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {shown} | {description} |")
    lines.append("")
    return lines
