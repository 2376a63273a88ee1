"""`edgewatch dashboard` as a real subprocess, and the bench's timing on a small database."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from agent.dashboard.bench import main as bench_main
from agent.dashboard.bench import time_pages
from agent.localbroker import free_port
from tests.support import cli_env, run_cli


def _wait_for(url: str, process: subprocess.Popen[str], timeout_s: float = 30.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bytes(response.read())
        except OSError:
            if process.poll() is not None:
                raise AssertionError(f"edgewatch dashboard exited: {process.stderr}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # polls another process's listening socket


def test_dashboard_command_serves_a_database_and_stops_on_ctrl_c(
    dashboard_db: Path, tmp_path: Path
) -> None:
    port = free_port("127.0.0.1")
    exe = Path(sys.executable).with_name("edgewatch")
    process = subprocess.Popen(
        [str(exe), "dashboard", "--db", str(dashboard_db), "--http", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        fleet = orjson.loads(_wait_for(f"http://127.0.0.1:{port}/api/fleet", process))
        assert len(fleet["assets"]) == 8
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert f"dashboard on http://127.0.0.1:{port}/" in err and "stopped" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "missing.db"], "database missing.db does not exist"),
        (["--http", "0.0.0.0:8080"], "not loopback: set dashboard.token"),
        (["--http", "localhost"], "is not HOST:PORT"),
    ],
)
def test_dashboard_command_refusals_are_one_line(
    dashboard_db: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    if "--db" not in args:
        args = [*args, "--db", str(dashboard_db)]
    done = run_cli("dashboard", *args, cwd=tmp_path, timeout_s=60)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_the_bench_times_every_page(dashboard_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    timings = time_pages(dashboard_db, repeats=2)
    assert [row.what for row in timings.rows][:2] == ["fleet page", "fleet API (refresh)"]
    assert all(row.median_ms > 0 and row.bytes > 0 for row in timings.rows)
    assert bench_main(["--db", str(dashboard_db), "--repeats", "1"]) == 0
    assert "asset API (week)" in capsys.readouterr().out
