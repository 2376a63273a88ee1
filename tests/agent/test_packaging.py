"""The systemd unit in packaging/ is what docs/install.md tells operators to install."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "edgewatch.service"
INSTALLED_EXE = "/opt/edgewatch/venv/bin/edgewatch"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_runs_the_agent_as_a_notify_service_with_a_watchdog() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert service["User"] == "edgewatch"
    assert service["StateDirectory"] == "edgewatch"
    assert service["ConfigurationDirectory"] == "edgewatch"
    assert service["ExecStart"].split() == [
        INSTALLED_EXE,
        "--config",
        "/etc/edgewatch/edgewatch.toml",
        "run",
    ]
    # The agent drains and exits within 10 s; systemd must wait at least that long.
    assert int(service["TimeoutStopSec"]) > 10


def test_docs_install_the_unit_from_the_repository() -> None:
    assert "packaging/edgewatch.service" in (ROOT / "docs" / "install.md").read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this environment's edgewatch.
    exe = Path(sys.executable).with_name("edgewatch")
    unit = tmp_path / "edgewatch.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_EXE, str(exe)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Unknown or misspelt keys are only warnings (exit 0): no output at all is the bar.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
