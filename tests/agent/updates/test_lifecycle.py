"""The agent's model lifecycle with real parts: a TUF repository in a folder, the model
store, the inference stage on ONNX Runtime scoring the pump bundle's golden windows.

Every refusal must be one event and one status message with the reason, and leave
the live model scoring (the same predictor object) with no candidate in the store.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata

from agent.domain import AssetPlan, Event, Prediction, Window
from agent.inference.alerting import AlertPolicy, AlertTracker
from agent.inference.baselines import BaselineStore
from agent.inference.shadow import ProbationLimits
from agent.inference.worker import InferenceConfig, InferenceStage, Result
from agent.metrics import Metrics
from agent.settings import UpdateSettings
from agent.updates.lifecycle import Configured, ModelLifecycle
from models.bundles import default_bundle_path
from models.lean import OnnxPredictor, load_lean_bundle, onnxruntime_available
from models.updates.repository import init_keys, publish, revoke
from models.updates.store import ModelStore
from tests.agent.updates.bundles import make_version, version_of

pytestmark = pytest.mark.skipif(not onnxruntime_available(), reason="needs onnxruntime")

ASSETS = ("pump-001", "pump-002")
PROBATION_WINDOWS = 96
RUL_ALERT_BELOW = 10.0
WAIT_S = 30.0


@dataclass
class World:
    tmp: Path
    keys: Path
    repo: Path
    store: ModelStore
    inference: InferenceStage
    lifecycle: ModelLifecycle
    live: Any
    events: list[Event] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    results: asyncio.Queue[Result] = field(default_factory=asyncio.Queue)
    inbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    @property
    def url(self) -> str:
        return self.repo.as_uri()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def refused(self, match: str) -> None:
        (event,) = [e for e in self.events if e.kind == "model_update_refused"]
        assert match in event.message, event.message
        assert "live bundle is unchanged" in event.message
        assert "\n" not in event.message
        assert self.statuses[-1]["state"] == "refused"
        assert self.statuses[-1]["live"] == self.live.model_version
        assert self.store.read().candidate is None
        assert self.inference.predictor is self.live and self.inference.shadow is None
        assert not self.store.bundles.exists() or not any(self.store.bundles.iterdir())


def _windows() -> np.ndarray:
    golden = load_file(str(default_bundle_path("pump") / "golden.safetensors"))
    windows: np.ndarray = golden["windows"]
    return windows


def _loader(backend: str) -> Callable[[Path], Any]:
    if backend == "torch":
        from models.bundle import load_bundle
        from models.predictor import Predictor

        return lambda path: Predictor(load_bundle(path))
    return lambda path: OnnxPredictor(load_lean_bundle(path))


@pytest.fixture(params=["onnx"])
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    load = _loader(request.param)
    live = load(default_bundle_path("pump"))
    sensors = live.sensors
    plans = {a: AssetPlan(sensors, from_bundle=True, rul=True, baseline=False) for a in ASSETS}
    inference = InferenceStage(
        live,
        BaselineStore(tmp_path / "baselines"),
        AlertTracker(AlertPolicy(open_after=2, close_after=2, close_ratio=0.8)),
        InferenceConfig(
            batch_max=16,
            batch_wait_ms=2,
            probation=ProbationLimits(
                windows=PROBATION_WINDOWS, seconds=0.0, rul_alert_below=RUL_ALERT_BELOW
            ),
        ),
        Metrics(),
        plans=plans,
    )
    keys = tmp_path / "keys"
    init_keys(keys)
    repo = tmp_path / "repo"
    cache = tmp_path / "updates"
    store = ModelStore(cache / "store")
    holder: dict[str, World] = {}

    async def emit(event: Event) -> None:
        holder["w"].events.append(event)

    async def status(doc: dict[str, Any]) -> None:
        holder["w"].statuses.append(doc)

    async def on_live(predictor: Any, path: Path) -> None:
        return None

    lifecycle = ModelLifecycle(
        store=store,
        settings=UpdateSettings.model_validate(
            {"enabled": True, "repo": repo.as_uri(), "trusted_root": keys / "root.json"}
        ),
        cache_dir=cache,
        host=inference,
        load=load,
        configured=Configured(live.model_version, default_bundle_path("pump")),
        running=live.model_version,
        name="pump",
        emit=emit,
        status=status,
        on_live=on_live,
    )
    w = World(tmp_path, keys, repo, store, inference, lifecycle, live)
    holder["w"] = w
    runner = asyncio.create_task(inference.run(w.inbox, w.results))
    yield w
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


_next_end: dict[str, int] = {}


async def feed(w: World, rounds: int) -> list[Window]:
    """Windows of every asset, each with a new end time, into the running stage."""
    sent = []
    data = _windows()
    for _ in range(rounds):
        for i in range(len(data)):
            for asset in ASSETS:
                end = _next_end.get(asset, 1_000_000) + 1000
                _next_end[asset] = end
                window = Window(asset, end - 31_000, end, data[i])
                sent.append(window)
                await w.inbox.put(window)
    return sent


async def predictions(w: World, n: int) -> list[Prediction]:
    got: list[Prediction] = []
    async with asyncio.timeout(WAIT_S):
        while len(got) < n:
            item = await w.results.get()
            if isinstance(item, Prediction):
                got.append(item)
    return got


async def until_probation_done(w: World) -> None:
    async with asyncio.timeout(WAIT_S):
        while not (w.inference.probation() or {}).get("done"):
            await feed(w, 1)
            await predictions(w, len(_windows()) * len(ASSETS))


async def test_tampered_target_is_refused(world: World) -> None:
    publish(make_version(world.tmp, "1"), world.url, world.keys)
    (archive,) = (world.repo / "targets" / "pump").glob("*.tar.gz")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    await world.lifecycle.poll_once()
    world.refused("does not match its signed length or hash")


async def test_metadata_signed_by_a_wrong_key_is_refused(world: World) -> None:
    publish(make_version(world.tmp, "1"), world.url, world.keys)
    path = world.repo / "metadata" / "timestamp.json"
    forged = Metadata.from_file(str(path))
    forged.signed.version += 1
    forged.sign(CryptoSigner.generate_ed25519())
    forged.to_file(str(path))
    await world.lifecycle.poll_once()
    world.refused("not signed by the keys the trusted root names")


async def test_unsigned_metadata_is_refused(world: World) -> None:
    publish(make_version(world.tmp, "1"), world.url, world.keys)
    path = world.repo / "metadata" / "timestamp.json"
    forged = Metadata.from_file(str(path))
    forged.signed.version += 1
    forged.signatures.clear()
    forged.to_file(str(path))
    await world.lifecycle.poll_once()
    world.refused("not signed by the keys the trusted root names")


async def test_expired_metadata_is_refused(world: World) -> None:
    past = datetime.now(UTC) - timedelta(days=5)
    publish(
        make_version(world.tmp, "1"),
        world.url,
        world.keys,
        expires_days=1,
        timestamp_days=30,
        now=past,
    )
    await world.lifecycle.poll_once()
    world.refused("has expired")


async def test_a_frozen_repository_is_refused(world: World) -> None:
    past = datetime.now(UTC) - timedelta(days=10)
    publish(make_version(world.tmp, "1"), world.url, world.keys, timestamp_days=7, now=past)
    await world.lifecycle.poll_once()
    world.refused("timestamp.json is expired")


async def test_older_metadata_replayed_is_refused(world: World) -> None:
    # The gateway saw the newer metadata (and rejected that version in probation);
    # a mirror then serves the older, validly signed metadata again.
    publish(make_version(world.tmp, "1"), world.url, world.keys)
    old = (world.repo / "metadata" / "timestamp.json").read_bytes()
    publish(make_version(world.tmp, "2"), world.url, world.keys)
    await world.lifecycle.poll_once()
    assert world.kinds() == ["model_update_fetched", "model_probation_started"]
    candidate = world.store.read().candidate
    assert candidate is not None
    await world.lifecycle._reject(candidate.version, "rejected in probation")
    world.events.clear()
    (world.repo / "metadata" / "timestamp.json").write_bytes(old)
    await world.lifecycle.poll_once()
    world.refused("older than what this gateway has seen")


@pytest.mark.parametrize("world", ["onnx", "torch"], indirect=True)
async def test_a_good_candidate_is_promoted_without_losing_a_window(world: World) -> None:
    good = make_version(world.tmp, "good")
    publish(good, world.url, world.keys)
    await world.lifecycle.poll_once()
    assert world.kinds() == ["model_update_fetched", "model_probation_started"]
    assert world.inference.probation() is not None
    sent = await feed(world, 2)
    scored = await predictions(world, len(sent))
    # In shadow: every stored prediction is the live model's.
    assert {p.model_version for p in scored} == {world.live.model_version}
    await until_probation_done(world)

    # Windows keep flowing while the verdict and the swap happen between batches.
    flowing = await feed(world, 3)
    await world.lifecycle.tick()
    more = await feed(world, 1)
    after = await predictions(world, len(flowing) + len(more))
    keys = [(p.asset, p.window_end_ms) for p in after]
    assert sorted(keys) == sorted((w.asset, w.end_ms) for w in flowing + more)
    assert len(set(keys)) == len(keys)  # none scored twice
    assert after[-1].model_version == version_of(good)
    versions = [p.model_version for p in after]
    # One switch, from the old model to the new, never back.
    assert versions == sorted(versions, key=lambda v: v == version_of(good))

    (promoted,) = [e for e in world.events if e.kind == "model_promoted"]
    detail: dict[str, Any] = dict(promoted.detail or {})
    assert detail["swap_pause_ms"] < 1000
    assert detail["assets"]["pump-001"]["windows"] >= PROBATION_WINDOWS // 2
    state = world.store.read()
    assert state.live is not None and state.live.version == version_of(good)
    assert state.previous is not None and state.previous.version == world.live.model_version
    assert world.statuses[-1]["state"] == "promoted"

    # Rollback by the CLI's store call: the running stage follows at its next tick.
    world.store.rollback("operator", configured=world.live.model_version)
    await world.lifecycle.tick()
    assert world.inference.predictor.model_version == world.live.model_version
    assert world.kinds()[-1] == "model_rolled_back"
    # ... and the rolled-back version is not fetched again.
    await world.lifecycle.poll_once()
    assert world.kinds()[-1] == "model_rolled_back"
    assert world.store.read().candidate is None


async def test_a_candidate_alerting_on_healthy_assets_is_rejected(world: World) -> None:
    bad = make_version(world.tmp, "bad", rul_cap=RUL_ALERT_BELOW / 2)
    publish(bad, world.url, world.keys)
    await world.lifecycle.poll_once()
    await until_probation_done(world)
    await world.lifecycle.tick()
    (rejected,) = [e for e in world.events if e.kind == "model_rejected"]
    assert "alerts on 100.0% of pump-001's windows" in rejected.message
    assert world.live.model_version + " stays live" in rejected.message
    assert world.statuses[-1]["state"] == "rejected"
    assert world.inference.predictor is world.live and world.inference.shadow is None
    state = world.store.read()
    assert state.candidate is None and state.rejected == (version_of(bad),)
    assert not any(world.store.bundles.iterdir())
    # Never fetched again.
    await world.lifecycle.poll_once()
    assert world.store.read().candidate is None


async def test_a_candidate_that_grows_the_agents_memory_past_the_limit_is_rejected(
    world: World,
) -> None:
    # /proc stands in: 100 MB until the candidate is in probation, 300 at its end.
    memory = {"mb": 100.0}
    world.lifecycle.rss = lambda: memory["mb"]
    heavy = make_version(world.tmp, "heavy")
    publish(heavy, world.url, world.keys)
    await world.lifecycle.poll_once()
    assert world.kinds()[-1] == "model_probation_started"
    memory["mb"] = 300.0
    await until_probation_done(world)
    await world.lifecycle.tick()
    (rejected,) = [e for e in world.events if e.kind == "model_rejected"]
    assert "its probation grew the agent's memory by 200 MB (100 -> 300 MB; limit 128 MB)" in (
        rejected.message
    )
    assert world.inference.predictor is world.live and world.inference.shadow is None
    assert world.store.read().rejected == (version_of(heavy),)


async def test_a_pinned_model_takes_no_update(world: World) -> None:
    world.store.pin(world.live.model_version, world.live.model_version)
    publish(make_version(world.tmp, "1"), world.url, world.keys)
    await world.lifecycle.poll_once()
    assert world.events == [] and world.store.read().candidate is None


async def test_a_candidate_for_other_sensors_is_rejected_with_the_reason(world: World) -> None:
    other = world.tmp / "fd001"
    shutil.copytree(default_bundle_path("cmapss-fd001"), other)
    publish(other, world.url, world.keys)
    world.lifecycle.name = "cmapss-fd001"
    await world.lifecycle.poll_once()
    (rejected,) = [e for e in world.events if e.kind == "model_rejected"]
    assert "re-commissioning assets for a new sensor set is not built" in rejected.message
    assert world.inference.predictor is world.live


async def test_a_failing_step_is_logged_once_and_the_agent_goes_on(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.store.root.mkdir(parents=True, exist_ok=True)
    world.store.state_path.write_text("{not json")
    for _ in range(3):
        await world.lifecycle._guarded(world.lifecycle.tick)
    failures = [r for r in caplog.records if r.getMessage() == "model update step failed"]
    assert len(failures) == 1
    assert world.inference.predictor is world.live


async def test_a_live_version_revoked_later_is_rolled_back(world: World) -> None:
    good = make_version(world.tmp, "good")
    publish(good, world.url, world.keys)
    await world.lifecycle.poll_once()
    await until_probation_done(world)
    await world.lifecycle.tick()
    assert world.inference.predictor.model_version == version_of(good)

    revoke(version_of(good), world.url, world.keys)
    await world.lifecycle.poll_once()
    assert world.kinds()[-2:] == ["model_revoked", "model_rolled_back"]
    assert f"model {version_of(good)} is revoked in" in world.events[-2].message
    assert world.inference.predictor.model_version == world.live.model_version
    state = world.store.read()
    assert state.live is None and state.rejected == (version_of(good),)


async def test_a_revoked_configured_bundle_is_reported(world: World) -> None:
    publish(default_bundle_path("pump"), world.url, world.keys)
    revoke(world.live.model_version, world.url, world.keys)
    await world.lifecycle.poll_once()
    assert world.kinds() == ["model_revoked"]
    assert "no previous model to return to" in world.events[0].message
    assert world.inference.predictor is world.live
