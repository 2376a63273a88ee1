"""The real ``edgewatch`` CLI in a subprocess, on the shipped C-MAPSS bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from models.bundles import default_bundle_path
from tests.conftest import CliRunner


@pytest.fixture
def shipped_cmapss() -> Path:
    try:
        return default_bundle_path("cmapss-fd001")
    except Exception:
        pytest.skip("shipped cmapss-fd001 bundle not built")


def test_evaluate_rul_json(
    cli: CliRunner, tmp_path: Path, fd001: Path, shipped_cmapss: Path
) -> None:
    frame = pd.read_csv(fd001, sep=r"\s+", header=None)
    test = pd.concat([frame[frame[0] == u].iloc[:-k] for u, k in ((1, 20), (2, 60), (3, 5))])
    test.to_csv(tmp_path / "test_FD001.txt", sep=" ", header=False, index=False)
    (tmp_path / "RUL_FD001.txt").write_text("20\n60\n5\n")
    r = cli(
        "evaluate",
        "rul",
        "--bundle",
        "cmapss-fd001",
        "--test",
        "test_FD001.txt",
        "--truth",
        "RUL_FD001.txt",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["units"] == 3 and out["rul_cap"] == 125.0
    assert out["bundle"].startswith("cmapss-fd001@")


def test_bad_bundle_is_one_line_error(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    r = cli("bench", "models", "--bundle", "b")
    assert r.returncode == 1
    assert "manifest.json is missing" in r.stderr
    assert "Traceback" not in r.stderr


def test_bench_json(cli: CliRunner, shipped_cmapss: Path) -> None:
    r = cli("bench", "models", "--bundle", str(shipped_cmapss), "--seconds", "0.2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rul_parameters"] <= 100_000
    assert out["rul_windows_per_s"] > 0
