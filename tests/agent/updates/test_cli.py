"""`edgewatch model status | rollback | pin` through the real CLI on a real store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from models.bundles import default_bundle_path
from models.updates.store import ModelStore
from tests.conftest import CliRunner

SHIPPED = "pump@2659d6ea3f090cae"


def _env(tmp_path: Path) -> dict[str, str]:
    return {"EDGEWATCH_STORAGE__DATA_DIR": str(tmp_path / "data")}


def _promoted(tmp_path: Path, version: str) -> ModelStore:
    store = ModelStore(tmp_path / "data" / "updates" / "store")
    staged = tmp_path / "staged"
    shutil.copytree(default_bundle_path("pump"), staged)
    store.add_candidate(staged, version, "fetched and verified")
    store.promote(version, "120 windows in shadow within limits", running=SHIPPED)
    return store


def test_status_of_a_gateway_without_updates(cli: CliRunner, tmp_path: Path) -> None:
    done = cli("model", "status", "--json", env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["live"] == SHIPPED and doc["live_from"] == "configured bundle"
    assert doc["candidate"] is None and doc["history"] == []
    done = cli("model", "rollback", env=_env(tmp_path))
    assert done.returncode == 1
    assert done.stderr.startswith("error: nothing to roll back to")
    assert len(done.stderr.strip().splitlines()) == 1


def test_rollback_and_pin(cli: CliRunner, tmp_path: Path) -> None:
    _promoted(tmp_path, "pump@00000000000000aa")
    done = cli("model", "status", env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "live: pump@00000000000000aa (store)" in done.stdout
    assert f"previous: {SHIPPED}" in done.stdout
    assert "promoted" in done.stdout and "within limits" in done.stdout

    done = cli("model", "pin", "pump@00000000000000bb", env=_env(tmp_path))
    assert done.returncode == 1
    assert done.stderr.startswith("error: pump@00000000000000bb is not the live model")
    done = cli("model", "pin", "pump@00000000000000aa", env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    done = cli("model", "rollback", env=_env(tmp_path))
    assert done.returncode == 1 and "pinned to pump@00000000000000aa" in done.stderr
    done = cli("model", "pin", "--unpin", env=_env(tmp_path))
    assert done.returncode == 0, done.stderr

    done = cli("model", "rollback", env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"{SHIPPED} (the configured bundle) is live" in done.stdout
    doc = json.loads(cli("model", "status", "--json", env=_env(tmp_path)).stdout)
    assert doc["live"] == SHIPPED and doc["rejected"] == ["pump@00000000000000aa"]
    assert [h["action"] for h in doc["history"]] == [
        "candidate",
        "promoted",
        "pinned",
        "unpinned",
        "rolled_back",
    ]


def test_pin_needs_a_version_or_unpin(cli: CliRunner, tmp_path: Path) -> None:
    done = cli("model", "pin", env=_env(tmp_path))
    assert done.returncode == 2
