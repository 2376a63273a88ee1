"""Signed model updates through the real agent (``edgewatch run``), broker and CLI.

A published bundle is fetched at start, scores in shadow, is promoted by hot swap and
rolled back by ``edgewatch model rollback``; the agent is killed with SIGKILL at each
step and must restart on exactly one complete live model. Predictions are checked by
window key: every window once, none missing around a swap.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from models.lean import onnxruntime_available
from models.manifest import read_verified_manifest
from models.updates.repository import init_keys, publish
from models.updates.store import ModelStore
from tests.agent.updates.bundles import make_version, version_of
from tests.e2e.fleet import PUMP_PERIOD_S, make_fleet
from tests.e2e.fleet import publish as publish_fleet
from tests.e2e.harness import AgentProcess, query, retained, scalar, wait_until, write_config
from tests.support import Broker, run_cli

pytestmark = pytest.mark.skipif(not onnxruntime_available(), reason="needs onnxruntime")

SITE = "e2e"
COMMISSION = 150
PROBATION_WINDOWS = 120
WAIT_S = 120.0
SHIPPED = "pump@2659d6ea3f090cae"


def _agent(tmp_path: Path, broker: Broker, keys: Path, repo: Path) -> AgentProcess:
    config = write_config(
        tmp_path / "edgewatch.toml",
        tmp_path / "data",
        broker.port,
        model={"backend": "onnx", "commission_samples": COMMISSION},
        identity={"site": SITE, "agent": f"gw-upd-{tmp_path.name}"},
        updates={
            "enabled": True,
            "repo": repo.as_uri(),
            "trusted_root": str(keys / "root.json"),
            "poll_interval_s": 3600.0,
            "probation_windows": PROBATION_WINDOWS,
            "probation_s": 0.0,
            "control_interval_s": 0.2,
        },
    )
    return AgentProcess(config=config, cwd=tmp_path)


def _event(db: Path, kind: str) -> list[str]:
    return [m for (m,) in query(db, "select message from events where kind = ?", kind)]


def _cli(tmp_path: Path, *args: str) -> Any:
    done = run_cli("--config", str(tmp_path / "edgewatch.toml"), *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done


def _health(db: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(scalar(db, "select health_json from heartbeats") or "{}")
    return doc


def _status(tmp_path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_cli(tmp_path, "model", "status", "--json").stdout)
    return doc


def _windows_once_in_order(db: Path) -> dict[str, list[str]]:
    """Per asset, the model versions of its windows in time order; every window end
    once, one sample period apart (none lost, none scored twice)."""
    rows = query(
        db,
        "select a.name, p.window_end_ms, p.model_version from predictions p "
        "join assets a on a.id = p.asset_id order by a.name, p.window_end_ms",
    )
    by_asset: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for asset, end, version in rows:
        by_asset[asset].append((end, version))
    step_ms = round(PUMP_PERIOD_S * 1000)
    versions = {}
    for asset, seq in by_asset.items():
        ends = [end for end, _ in seq]
        assert len(ends) == len(set(ends)), f"{asset}: a window scored twice"
        gaps = [b - a for a, b in itertools.pairwise(ends) if b - a != step_ms]
        assert not gaps, f"{asset}: windows missing ({gaps[:5]})"
        versions[asset] = [v for _, v in seq]
    return versions


def _scored_up_to(db: Path, chunks: list[Any]) -> bool:
    """Each asset's window ending at its last published sample is scored."""
    ends = {c.asset: round(c.ts[-1] * 1000) for c in chunks}
    return all(
        query(
            db,
            "select 1 from predictions p join assets a on a.id = p.asset_id "
            "where a.name = ? and p.window_end_ms = ?",
            asset,
            end,
        )
        for asset, end in ends.items()
    )


def _one_switch(versions: list[str], old: str, new: str) -> bool:
    """Windows scored by ``old`` then by ``new``, never back and forth."""
    first_new = versions.index(new) if new in versions else len(versions)
    return set(versions[:first_new]) <= {old} and set(versions[first_new:]) <= {new}


def _one_complete_live_model(store: ModelStore) -> None:
    state, _ = store.recover()
    on_disk = {p.name for p in store.bundles.iterdir()} if store.bundles.exists() else set()
    assert on_disk == state.folders()
    for slot in (state.live, state.previous, state.candidate):
        path = None if slot is None else store.path_of(slot)
        if path is not None:
            assert slot is not None
            assert read_verified_manifest(path, path)["version"] == slot.version


def test_an_update_is_promoted_by_hot_swap_and_rolled_back(
    tmp_path: Path, mqtt_broker: Broker
) -> None:
    keys, repo = tmp_path / "keys", tmp_path / "repo"
    init_keys(keys)
    good = make_version(tmp_path, "good")
    publish(good, repo.as_uri(), keys)
    new = version_of(good)
    agent = _agent(tmp_path, mqtt_broker, keys, repo)
    db = tmp_path / "data" / "edgewatch.db"
    fleet = make_fleet(2, COMMISSION + 400, fault_fraction=0.0, seed=21)
    head, tail = fleet.split(COMMISSION + 10)
    middle, last = tail[: len(tail) // 2], tail[len(tail) // 2 :]
    agent.start()
    try:
        wait_until(lambda: bool(_event(db, "model_probation_started")), WAIT_S, "probation")
        # No asset yet: the candidate waits in probation, as `model status` shows.
        wait_until(lambda: _status(tmp_path)["probation"] is not None, WAIT_S, "a heartbeat")
        shown = _cli(tmp_path, "model", "status").stdout
        assert f"candidate: {new} in probation, 0/{PROBATION_WINDOWS} windows" in shown
        publish_fleet(mqtt_broker, head, site=SITE)
        publish_fleet(mqtt_broker, middle, site=SITE)
        wait_until(lambda: bool(_event(db, "model_promoted")), WAIT_S, "the promotion")
        (promoted,) = _event(db, "model_promoted")
        assert f"model {new} promoted, {SHIPPED} is previous" in promoted
        status = _status(tmp_path)
        assert status["live"] == new and status["previous"]["version"] == SHIPPED
        assert [h["action"] for h in status["history"]] == ["candidate", "promoted"]
        topic = f"edgewatch/{SITE}/gw-upd-{tmp_path.name}/status/model"
        assert retained(mqtt_broker.host, mqtt_broker.port, topic)[topic]["state"] == "promoted"

        publish_fleet(mqtt_broker, last, site=SITE)
        wait_until(lambda: _scored_up_to(db, last), WAIT_S, "every window scored")
        for asset, versions in _windows_once_in_order(db).items():
            assert _one_switch(versions, SHIPPED, new), asset
            assert versions[-1] == new

        done = _cli(tmp_path, "model", "rollback")
        assert f"rolled back {new}; {SHIPPED} (the configured bundle) is live" in done.stdout
        wait_until(lambda: bool(_event(db, "model_rolled_back")), WAIT_S, "the agent to follow")
        assert _status(tmp_path)["live"] == SHIPPED
        assert retained(mqtt_broker.host, mqtt_broker.port, topic)[topic]["state"] == (
            "rolled_back"
        )
        wait_until(
            lambda: _health(db).get("model_version") == SHIPPED,
            WAIT_S,
            "a heartbeat with the rolled-back model",
        )
        assert _health(db)["torch_loaded"] is False
    finally:
        assert agent.stop() == 0, agent.log_text()[-3000:]


#: Each round's kills: the log line the agent is killed at (any of them).
_KILL_AT = (
    ("model update fetched", "model probation started"),
    ("model probation started",),
    ("model promoted",),
)


def _kill_at_each_step(tmp_path: Path, broker: Broker, rounds: int, seed: int) -> None:
    """Per round a new version is published; the agent is killed at a random instant
    of its start (the poll's download and verification run then), once the version is
    fetched, once in probation, once just promoted, and restarted each time."""
    rng = random.Random(seed)
    keys, repo = tmp_path / "keys", tmp_path / "repo"
    init_keys(keys)
    agent = _agent(tmp_path, broker, keys, repo)
    db = tmp_path / "data" / "edgewatch.db"
    store = ModelStore(tmp_path / "data" / "updates" / "store")
    samples = COMMISSION + 50 + rounds * 2 * PROBATION_WINDOWS
    fleet = make_fleet(1, samples, fault_fraction=0.0, seed=23)
    head, rest = fleet.split(COMMISSION + 40)
    agent.start()
    publish_fleet(broker, head, site=SITE)
    wait_until(lambda: _scored_up_to(db, head), WAIT_S, "scoring")
    agent.kill()
    step = 2 * PROBATION_WINDOWS
    sent = 0
    for n in range(rounds):
        publish(make_version(tmp_path, f"r{n}"), repo.as_uri(), keys)
        agent.start(wait_subscribed_s=0)
        wait_until(lambda: agent.saw("agent starting"), WAIT_S, "the agent's start")
        # Fault injection, not synchronisation: a random instant of the first poll.
        time.sleep(rng.uniform(0.0, 0.4))
        agent.kill()
        _one_complete_live_model(store)
        for lines in _KILL_AT:
            agent.start()
            if lines == ("model promoted",):
                publish_fleet(broker, rest[sent : sent + step], site=SITE)
                sent += step
            wait_until(lambda: any(map(agent.saw, lines)), WAIT_S, lines[0])  # noqa: B023
            agent.kill()
            _one_complete_live_model(store)
    agent.start()
    try:
        tail = rest[sent : sent + 10]
        publish_fleet(broker, tail, site=SITE)
        wait_until(lambda: _scored_up_to(db, tail), WAIT_S, "scoring after the last kill")
        live = store.read().live
        assert live is not None
        # The newest windows are scored by the store's live model, the last promoted.
        assert _windows_once_in_order(db)["pump-001"][-1] == live.version
        # Downloads and extractions the kills cut short went at the next start.
        cache = tmp_path / "data" / "updates"
        assert not list(cache.glob("staged/*")) and not list(cache.glob("downloads/*"))
    finally:
        assert agent.stop() == 0, agent.log_text()[-3000:]
    _windows_once_in_order(db)


def test_kill_9_at_each_update_step_leaves_one_live_model(
    tmp_path: Path, mqtt_broker: Broker
) -> None:
    _kill_at_each_step(tmp_path, mqtt_broker, rounds=1, seed=1)


@pytest.mark.slow
def test_kill_9_at_each_update_step_many_times(tmp_path: Path, mqtt_broker: Broker) -> None:
    _kill_at_each_step(tmp_path, mqtt_broker, rounds=20, seed=20)


@pytest.mark.slow
def test_the_demo_shows_an_update_promoted(tmp_path: Path) -> None:
    done = run_cli(
        *("demo", "--assets", "2", "--compressors", "0", "--duration", "60s", "--model-update"),
        cwd=tmp_path,
        timeout_s=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    db = tmp_path / "edgewatch-data" / "edgewatch.db"
    kinds = [k for (k,) in query(db, "select kind from events where kind like 'model%'")]
    assert kinds == ["model_update_fetched", "model_probation_started", "model_promoted"]
    assert "last change: promoted pump@" in done.stdout.replace("\n", " ")


def test_an_unreadable_store_runs_the_configured_bundle(
    tmp_path: Path, mqtt_broker: Broker
) -> None:
    keys, repo = tmp_path / "keys", tmp_path / "repo"
    init_keys(keys)
    state = tmp_path / "data" / "updates" / "store" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"live": {"version": "pump@x"')  # a card that lost the file's end
    agent = _agent(tmp_path, mqtt_broker, keys, repo)
    db = tmp_path / "data" / "edgewatch.db"
    agent.start()
    try:
        wait_until(lambda: bool(_event(db, "model_store_unusable")), WAIT_S, "the event")
        (started,) = _event(db, "agent_started")
        assert SHIPPED in started
    finally:
        assert agent.stop() == 0, agent.log_text()[-3000:]
