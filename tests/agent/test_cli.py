"""The real ``edgewatch`` console script in a subprocess, on real files."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from agent.cli.app import app
from tests.conftest import CliRunner


def all_command_paths() -> list[list[str]]:
    """Every command and group of the CLI, walked from the Typer app."""
    import typer.main

    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]

    def walk(command: object, prefix: list[str]) -> None:
        subcommands = getattr(command, "commands", {})
        for name, sub in subcommands.items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", all_command_paths(), ids=lambda p: " ".join(p) or "root")
def test_every_command_has_help(path: list[str]) -> None:
    # In this process: the installed entry point is run as a subprocess by the other
    # tests here; 61 fresh interpreters only to print help cost over a minute of CI.
    from typer.testing import CliRunner as TyperRunner

    result = TyperRunner().invoke(app, [*path, "--help"], prog_name="edgewatch")
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert "Usage:" in result.stdout
    assert "Traceback" not in result.output


def test_version(cli: CliRunner) -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"edgewatch \d+\.\d+\.\d+\S*\n", result.stdout)


def test_usage_error_exits_2_without_traceback(cli: CliRunner) -> None:
    result = cli("db", "no-such-command")
    assert result.returncode == 2
    assert "No such command" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_show_toml_parses_back_and_redacts(cli: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[mqtt]\npassword = "hunter2"\nport = 1999\n')
    result = cli("--config", str(config), "config", "show")
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    shown = tomllib.loads(result.stdout)
    assert shown["mqtt"]["port"] == 1999
    assert shown["mqtt"]["password"] == "********"


def test_config_show_json_includes_env_overrides(cli: CliRunner) -> None:
    result = cli("config", "show", "--json", env={"EDGEWATCH_IDENTITY__SITE": "north"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["identity"]["site"] == "north"


def test_config_check_ok(cli: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "ok.toml"
    config.write_text('[identity]\nsite = "plant-7"\n')
    result = cli("config", "check", str(config))
    assert result.returncode == 0
    assert "configuration OK" in result.stdout


def test_config_check_lists_one_line_per_problem(cli: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[mqtt]\nport = 70000\nhots = 1\n")
    result = cli("config", "check", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "mqtt.port: 70000 is not a port (1-65535)",
        "mqtt.hots: unknown key",
    ]


def test_bad_config_file_gives_one_line_and_exit_1(cli: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[mqtt]\nport = 70000\n")
    result = cli("--config", str(config), "db", "upgrade")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "mqtt.port: 70000 is not a port (1-65535)" in lines[0]
    assert not (tmp_path / "edgewatch-data").exists()


def test_bad_env_var_gives_one_line_and_exit_1(cli: CliRunner) -> None:
    result = cli("config", "show", env={"EDGEWATCH_MQTT__PORT": "70000"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "mqtt.port: 70000 is not a port (1-65535) (from EDGEWATCH_MQTT__PORT)" in lines[0]


def test_db_upgrade_current_history(cli: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "state" / "x.db"
    env = {"EDGEWATCH_STORAGE__DATABASE": str(db)}
    current = cli("db", "current", env=env)
    assert current.returncode == 1
    assert "does not exist" in current.stderr

    first = cli("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert "schema empty ->" in first.stdout
    again = cli("db", "upgrade", env=env)
    assert "already at schema" in again.stdout

    state = json.loads(cli("db", "current", "--json", env=env).stdout)
    assert state["up_to_date"] is True
    history = json.loads(cli("db", "history", "--json").stdout)
    assert history[0]["revision"] == state["head"]


def test_corrupt_database_is_one_line_and_untouched(cli: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "broken.db"
    db.write_bytes(b"\x00garbage" * 512)
    result = cli("db", "upgrade", env={"EDGEWATCH_STORAGE__DATABASE": str(db)})
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not an SQLite database" in result.stderr
    assert db.read_bytes() == b"\x00garbage" * 512


def test_debug_shows_the_traceback(cli: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "broken.db"
    db.write_bytes(b"\x00garbage" * 512)
    result = cli("--debug", "db", "upgrade", env={"EDGEWATCH_STORAGE__DATABASE": str(db)})
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_cli_literal_defaults_match_the_shipped_recipes() -> None:
    from agent.cli.models_cmd import PUMP_RUL_CAP_H
    from models.retrain_shipped import PUMP_RUL

    assert PUMP_RUL.cap == PUMP_RUL_CAP_H
