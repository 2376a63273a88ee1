"""Real components for tests: a Mosquitto broker, a migrated database, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from agent.localbroker import LocalBroker, free_port

REPO = Path(__file__).resolve().parents[1]

# The tests use the same local broker as the demo and the benchmark.
Broker = LocalBroker
__all__ = ["REPO", "Broker", "cli_env", "free_port", "run_cli", "running_broker", "start_cli"]


@contextmanager
def running_broker(workdir: Path) -> Iterator[Broker]:
    with LocalBroker(workdir) as broker:
        yield broker


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a CLI subprocess: no inherited EDGEWATCH_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWATCH_")}
    env["COLUMNS"] = "200"  # rich wraps tables at 80 columns otherwise
    env.update(extra or {})
    return env


def _command() -> list[str]:
    exe = Path(sys.executable).with_name("edgewatch")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "agent"]


def start_cli(
    *args: str, cwd: Path, out: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start the real ``edgewatch`` in the background, stdout and stderr into ``out``
    and ``out`` + ``.err`` (files, not pipes: a long run fills a pipe nobody reads)."""
    with out.open("wb") as stdout, out.with_name(out.name + ".err").open("wb") as stderr:
        return subprocess.Popen(
            [*_command(), *args], cwd=cwd, env=cli_env(env), stdout=stdout, stderr=stderr
        )


def run_cli(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``edgewatch`` console script in a subprocess."""
    return subprocess.run(
        [*_command(), *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        input=input_text,
        check=False,
    )
