"""What the running agent imports: only what `edgewatch run` needs (issue 22, RSS).

Every module a process imports stays in its RSS for good; the other commands'
modules (simulators, benchmarks, reports, training) cost the agent about 5 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cli.app import command_name
from tests.support import Broker, start_cli

SUBSCRIBE_TIMEOUT_S = 60.0


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["run"], "run"),
        (["--config", "a.toml", "run", "--http", "127.0.0.1:8080"], "run"),
        (["-c", "run", "status"], "status"),  # a file named "run" is the option's value
        (["--log-level", "DEBUG", "--debug", "run"], "run"),
        (["--config=a.toml", "run"], "run"),
        (["--version"], None),
        (["bench", "run"], "bench"),
    ],
)
def test_the_command_is_the_first_word_after_the_root_options(
    args: list[str], name: str | None
) -> None:
    assert command_name(args) == name


def test_importing_the_cli_leaves_the_other_commands_unloaded() -> None:
    code = (
        "import sys, json\n"
        "import agent.cli, agent.cli.app\n"
        "agent.cli.app.run_app()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('agent.cli.', 'simulators')))\n"
        "print(json.dumps(loaded))\n"
        "from agent.cli.app import app\n"  # the full application, built on first use
        "print(json.dumps(sorted(c.name or '' for c in app.registered_commands)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded, commands = (json.loads(line) for line in out.stdout.splitlines())
    assert set(loaded) <= {"agent.cli._common", "agent.cli.app", "agent.cli.run_cmd"}
    assert {"run", "demo", "status", "dashboard", "report"} <= set(commands)


def _wait_subscribed(process: subprocess.Popen[bytes], err: Path) -> None:
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
    while '"subscribed"' not in err.read_text(errors="replace"):
        assert process.poll() is None, err.read_text(errors="replace")[-2000:]
        assert time.monotonic() < deadline, "the agent did not subscribe"
        time.sleep(0.05)  # polling a file for a condition, with a deadline


def test_the_running_onnx_agent_imports_no_other_command_no_rich_no_torch_no_sparkplug(
    tmp_path: Path, mqtt_broker: Broker
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        "\n".join(
            [
                "[mqtt]",
                f'host = "{mqtt_broker.host}"',
                f"port = {mqtt_broker.port}",
                "[storage]",
                f'data_dir = "{tmp_path / "data"}"',
                "[model]",
                'backend = "onnx"',
                "[sync]",
                "enabled = false",
                "[logging]",
                'format = "json"',
                "",
            ]
        )
    )
    out = tmp_path / "agent.out"
    err = tmp_path / "agent.out.err"
    process = start_cli(
        "--config",
        str(config),
        "run",
        cwd=tmp_path,
        out=out,
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    try:
        _wait_subscribed(process, err)
    finally:
        process.terminate()
        process.wait(timeout=30)
    imported = {
        line.split("|")[2].strip()
        for line in err.read_text(errors="replace").splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "agent.runtime" in imported and "onnxruntime" in imported
    unwanted = {
        m
        for m in imported
        if m == "torch"
        or m == "rich"
        or m.startswith(("torch.", "rich.", "simulators", "agent.bench", "pandas", "pyarrow"))
        # Sparkplug is off: neither its modules nor protobuf (about 4 MB).
        or m.startswith(("agent.sparkplug", "agent.ingest.sparkplug", "google.protobuf"))
        or (
            m.startswith("agent.cli.")
            and m
            not in {"agent.cli._common", "agent.cli.app", "agent.cli.run_cmd", "agent.cli._time"}
        )
    }
    assert unwanted == set()
