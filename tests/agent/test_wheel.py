"""A built wheel carries everything the agent needs, migrations included."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from tests.support import REPO, cli_env


def test_wheel_in_a_fresh_venv_creates_and_upgrades_a_database(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(dist.glob("edgewatch-*.whl"))

    fresh = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=True).create(fresh)
    python = fresh / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # The heavy dependencies come from the test environment; the package itself,
    # migrations included, only from the wheel. Appended after the venv's own
    # site-packages, so the wheel's copy of edgewatch wins.
    fresh_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (fresh_site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import agent.storage.migrate as m; print(m.migrations_dir())"],
        cwd=work,
        env=cli_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(fresh)), where
    assert str(REPO) not in where

    edgewatch = fresh / "bin" / "edgewatch"
    result = subprocess.run(
        [str(edgewatch), "db", "upgrade"],
        cwd=work,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (work / "edgewatch-data" / "edgewatch.db").is_file()
    current = subprocess.run(
        [str(edgewatch), "db", "current"],
        cwd=work,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "up to date" in current.stdout, current.stdout + current.stderr
