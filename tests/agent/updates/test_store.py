"""The gateway's model store: pointer switches, history, and kill -9 at any step."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import UpdateError
from models.bundles import default_bundle_path
from models.manifest import read_verified_manifest
from models.updates.store import BUNDLES, ModelStore, StoreState

CONFIGURED = "pump@configured"


def staged(tmp: Path, tag: str) -> Path:
    out = tmp / "staged" / tag
    shutil.copytree(default_bundle_path("pump"), out)
    return out


def test_a_candidate_is_promoted_and_rolled_back(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    assert store.read() == StoreState()
    state = store.add_candidate(staged(tmp_path, "a"), "pump@a", "fetched")
    assert state.candidate is not None and state.live is None
    assert not (tmp_path / "staged" / "a").exists()
    state = store.promote("pump@a", "probation passed", running=CONFIGURED)
    assert state.live is not None and state.live.version == "pump@a"
    assert state.previous is not None and state.previous.version == CONFIGURED
    assert state.previous.folder is None and state.candidate is None
    live = store.path_of(state.live)
    assert live is not None and read_verified_manifest(live, live)

    store.add_candidate(staged(tmp_path, "b"), "pump@b", "fetched")
    state = store.promote("pump@b", "probation passed", running="pump@a")
    assert sorted(p.name for p in (store.root / BUNDLES).iterdir()) == ["pump-a", "pump-b"]

    state = store.rollback("operator", configured=CONFIGURED)
    assert state.live is not None and state.live.version == "pump@a"
    assert state.previous is None and "pump@b" in state.rejected
    # The rolled-back bundle's folder is gone with its last reference.
    assert [p.name for p in (store.root / BUNDLES).iterdir()] == ["pump-a"]
    state = store.rollback("operator", configured=CONFIGURED)
    assert state.live is None  # the configured bundle again
    with pytest.raises(UpdateError, match="nothing to roll back to"):
        store.rollback("operator")
    actions = [c.action for c in store.read().history]
    assert actions == [*["candidate", "promoted"] * 2, "rolled_back", "rolled_back"]


def test_a_pinned_live_model_is_not_replaced(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    with pytest.raises(UpdateError, match="is not the live model"):
        store.pin("pump@other", CONFIGURED)
    store.pin(CONFIGURED, CONFIGURED)
    store.add_candidate(staged(tmp_path, "a"), "pump@a", "fetched")
    with pytest.raises(UpdateError, match="pinned"):
        store.promote("pump@a", "probation passed", running=CONFIGURED)
    state = store.reject("pump@a", "the live model is pinned")
    assert state.candidate is None and state.rejected == ("pump@a",)
    state = store.pin(None, CONFIGURED)
    assert state.pinned is None


def test_recover_drops_leftovers_and_lost_slots(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    store.add_candidate(staged(tmp_path, "a"), "pump@a", "fetched")
    orphan = store.root / BUNDLES / "pump-half-extracted"
    orphan.mkdir()
    (store.root / ".state.json.123.tmp").write_text("{")
    state, removed = store.recover()
    assert state.candidate is not None
    assert sorted(removed) == [".state.json.123.tmp", "pump-half-extracted"]
    shutil.rmtree(store.root / BUNDLES / "pump-a")
    state, _ = store.recover()
    assert state.candidate is None and state.history[-1].action == "lost"


# A child process walks a model's whole life in a loop while the parent kills it at a
# random instant; each step prints a line so that kills land in every step.
_CHILD = """
import shutil, sys
from pathlib import Path
from models.bundles import default_bundle_path
from models.updates.store import ModelStore

root, staging = Path(sys.argv[1]), Path(sys.argv[2])
store = ModelStore(root)
store.recover()
n = 0
while True:
    n += 1
    version = f"pump@{n:04d}"
    src = staging / f"{n}.partial"
    shutil.copytree(default_bundle_path("pump"), src)
    print("staged", flush=True)
    store.add_candidate(src, version, "fetched")
    print("candidate", flush=True)
    state = store.read()
    running = state.live.version if state.live else "pump@configured"
    if n % 3:
        store.promote(version, "probation passed", running=running)
        print("promoted", flush=True)
    else:
        store.reject(version, "alert rate")
        print("rejected", flush=True)
    if n % 4 == 0:
        store.rollback("operator", configured="pump@configured")
        print("rolled back", flush=True)
"""


def _kill_during_steps(tmp_path: Path, iterations: int, seed: int) -> None:
    rng = random.Random(seed)
    root, staging = tmp_path / "store", tmp_path / "staging"
    staging.mkdir()
    for _ in range(iterations):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(root), str(staging)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(rng.randint(1, 8)):  # a few steps in, whichever they are
            if not child.stdout.readline():
                break
        # Mid-step: the next step is under way (copying, fsyncing, renaming).
        for _ in range(rng.randint(0, 20000)):
            pass
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
        shutil.rmtree(staging)  # what discard_partial does at the agent's start
        staging.mkdir()
        state, _ = ModelStore(root).recover()
        _one_complete_live_model(ModelStore(root), state)


def _one_complete_live_model(store: ModelStore, state: StoreState) -> None:
    names = {p.name for p in (store.root / BUNDLES).iterdir()} if store.bundles.exists() else set()
    assert names == state.folders()
    for slot in (state.live, state.previous, state.candidate):
        path = None if slot is None else store.path_of(slot)
        if path is not None:
            manifest = read_verified_manifest(path, path)  # complete: every file's sha256
            assert manifest["name"] == "pump"
    assert not list(store.root.glob(".state.json.*"))
    json.loads(store.state_path.read_text())


def test_kill_9_at_any_step_leaves_one_complete_live_model(tmp_path: Path) -> None:
    _kill_during_steps(tmp_path, iterations=4, seed=17)


@pytest.mark.slow
def test_kill_9_at_any_step_many_times(tmp_path: Path) -> None:
    _kill_during_steps(tmp_path, iterations=40, seed=1717)
