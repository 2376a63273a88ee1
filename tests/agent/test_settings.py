from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from agent.errors import ConfigError
from agent.settings import (
    REDACTED,
    MqttSettings,
    ProfileSettings,
    Settings,
    is_secret_name,
    load_settings,
    redact,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("EDGEWATCH_"):
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgewatch.toml"
    path.write_text(text)
    return path


def test_defaults_run_out_of_the_box() -> None:
    settings = load_settings()
    assert settings.mqtt.host == "127.0.0.1"
    assert settings.mqtt.port == 1883
    assert settings.storage.database_path == Path("edgewatch-data/edgewatch.db")
    assert settings.sync_target.startswith("file://")
    assert settings.sync_target.endswith("/edgewatch-data/cloud")
    assert settings.mqtt_client_id == f"edgewatch-{settings.identity.agent}"


def test_precedence_file_then_env_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        '[mqtt]\nport = 1884\nhost = "file-host"\nkeepalive_s = 40\n[identity]\nsite = "s1"\n',
    )
    settings = load_settings(path)
    assert (settings.mqtt.port, settings.mqtt.host, settings.identity.site) == (
        1884,
        "file-host",
        "s1",
    )

    monkeypatch.setenv("EDGEWATCH_MQTT__PORT", "1885")
    settings = load_settings(path)
    assert settings.mqtt.port == 1885
    assert settings.mqtt.host == "file-host"  # untouched keys keep the file's value

    settings = load_settings(path, {"mqtt": {"port": 1886}})
    assert settings.mqtt.port == 1886
    assert settings.mqtt.keepalive_s == 40  # a flag overrides one key, not the section


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[identity]\nsite = "north"\n')
    monkeypatch.setenv("EDGEWATCH_CONFIG", str(path))
    assert load_settings().identity.site == "north"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[mqtt]\nport = 70000\n", "mqtt.port: 70000 is not a port (1-65535)"),
        ("[mqtt]\nport = 0\n", "mqtt.port: 0 is not a port (1-65535)"),
        ('[mqtt]\nport = "x"\n', "mqtt.port: x is not a valid integer"),
        ("[mqtt]\nhots = 3\n", "mqtt.hots: unknown key"),
        ("[mqttt]\nport = 3\n", "mqttt: unknown key"),
        ("[storage]\nretention_days = -1\n", "storage.retention_days: -1 must be greater than 0"),
        ('[sync]\ntarget = "ftp://x"\n', "sync.target: ftp://x must start with file:// or s3://"),
        ('[identity]\nsite = "a/b"\n', "identity.site: a/b must be a non-empty name"),
        ('[identity]\nsite = "a\\nb"\n', "identity.site: 'a\\nb' must be a non-empty name"),
        (f'[identity]\nsite = "{"s" * 129}"\n', "identity.site: sss"),
        ('[identity]\nagent = ".."\n', "identity.agent: .. must be a non-empty name"),
        ('[mqtt]\ntelemetry_topic = "x/{asset}"\n', "mqtt.telemetry_topic: x/{asset} must contain"),
        ('[logging]\nlevel = "LOUD"\n', "logging.level: LOUD must be 'DEBUG'"),
        ('[mqtt]\ncert_file = "/c.pem"\n', "cert_file and key_file go together"),
    ],
)
def test_bad_file_names_key_value_and_rule(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert any(p.startswith(expected) or expected in p for p in info.value.problems), (
        info.value.problems
    )
    assert str(tmp_path) in str(info.value)


def test_every_problem_is_listed(tmp_path: Path) -> None:
    path = write(tmp_path, "[mqtt]\nport = 70000\nqos = 2\n[storage]\nfoo = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert len(info.value.problems) == 3


def test_bad_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWATCH_MQTT__PORT", "70000")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.problems == [
        "mqtt.port: 70000 is not a port (1-65535) (from EDGEWATCH_MQTT__PORT)"
    ]


def test_unknown_environment_variables_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWATCH_MQTTT__PORT", "1")
    monkeypatch.setenv("EDGEWATCH_MQTT__PROT", "1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = "\n".join(info.value.problems)
    assert "EDGEWATCH_MQTTT__PORT: unknown setting" in text
    assert "mqtt.prot: unknown key (from EDGEWATCH_MQTT__PROT)" in text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("[mqtt\nport=1", "is not valid TOML"),
        (b"\xff\xfe[mqtt]", "not UTF-8"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: str | bytes | None, expected: str) -> None:
    path = tmp_path / "c.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=expected):
        load_settings(path)


def test_secrets_are_redacted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[mqtt]\nusername = "u"\npassword = "hunter2"\n[sync]\ns3_secret_access_key = "s3cret"\n',
    )
    settings = load_settings(path)
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "hunter2"
    shown = settings.redacted()
    assert shown["mqtt"]["password"] == REDACTED
    assert shown["sync"]["s3_secret_access_key"] == REDACTED
    assert "hunter2" not in repr(settings)


def test_bad_secret_value_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "[mqtt]\npassword = 12\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "12" not in info.value.problems[0].split(":", 1)[1].split("is")[0]


def test_a_rule_across_mqtt_keys_does_not_print_the_section(tmp_path: Path) -> None:
    # The model-level check of [mqtt] used to print the section dict, password included.
    path = write(
        tmp_path,
        '[mqtt]\nusername = "u"\npassword = "hunter2"\ncert_file = "/c.pem"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "hunter2" not in str(info.value)
    assert info.value.problems == [
        "mqtt: cert_file and key_file go together for mutual TLS: set both or none"
    ]


def test_secrets_nested_in_a_bad_value_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "EDGEWATCH_MQTT",
        '{"host": [{"password": "hunter2", "nested": {"api_token": "t0ken"}}, "ok"]}',
    )
    monkeypatch.setenv("EDGEWATCH_SYNC", '{"s3_region": {"s3_secret_access_key": "s3cret"}}')
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    for secret in ("hunter2", "t0ken", "s3cret"):
        assert secret not in text
    assert "mqtt.host: [{'password': '********'" in text
    assert "sync.s3_region: {'s3_secret_access_key': '********'} is not a valid string" in text


def test_redact_walks_dicts_and_lists() -> None:
    value = {
        "password": "a",
        "key_file": "/etc/k.pem",
        "profiles": [{"match": "x", "auth_token": "b"}, ["c", {"client_secret": "d"}]],
        "s3_access_key_id": "e",
        "unset_password": None,
    }
    assert redact(value) == {
        "password": REDACTED,
        "key_file": "/etc/k.pem",  # a path, not a secret
        "profiles": [{"match": "x", "auth_token": REDACTED}, ["c", {"client_secret": REDACTED}]],
        "s3_access_key_id": REDACTED,
        "unset_password": None,  # "not set" stays visible
    }


def test_every_secret_field_has_a_secret_name() -> None:
    # Redaction goes by name; a SecretStr field whose name it misses would leak.
    for section in Settings.SECTIONS:
        annotation = Settings.model_fields[section].annotation
        model = ProfileSettings if section == "profiles" else annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for name, info in model.model_fields.items():
            if "SecretStr" in str(info.annotation):
                assert is_secret_name(name), f"{section}.{name}"


def test_a_validation_error_printed_as_is_hides_its_input() -> None:
    with pytest.raises(ValidationError) as info:
        MqttSettings.model_validate({"password": "hunter2", "cert_file": "/c.pem"})
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"mqtt": {"password": "hunter2", "port": "x"}})
    assert "hunter2" not in str(info.value)


def test_client_certificate_implies_tls(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\ncert_file = "/c.pem"\nkey_file = "/k.pem"\n')
    settings = load_settings(path)
    assert settings.mqtt.use_tls
    assert not load_settings().mqtt.use_tls
