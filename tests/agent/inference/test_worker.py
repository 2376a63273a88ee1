"""The inference stage with a real shipped bundle and real commissioning (small budgets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from agent.domain import (
    Alert,
    AssetState,
    AssetStatus,
    CommissionRequest,
    Event,
    Prediction,
    Window,
)
from agent.inference.alerting import AlertPolicy, AlertTracker
from agent.inference.baselines import BaselineStore
from agent.inference.worker import InferenceConfig, InferenceStage, Result
from agent.metrics import Metrics
from models.bundle import load_bundle
from models.bundles import default_bundle_path
from models.predictor import Predictor


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(load_bundle(default_bundle_path("cmapss-fd001")))


def healthy(predictor: Predictor, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    head = predictor.bundle.rul
    assert head is not None
    scaler = head.scaler.to_json()
    # Mid-range of the training data for every sensor, with a little noise.
    level = np.asarray(scaler["offset"]) + 0.5 * np.asarray(scaler["scale"])
    noise = rng.normal(0, 0.05, size=(n, len(predictor.sensors))) * np.asarray(scaler["scale"])
    samples: np.ndarray = (level + noise).astype(np.float32)
    return samples


def stage(predictor: Predictor, tmp_path: Path) -> InferenceStage:
    return InferenceStage(
        predictor,
        BaselineStore(tmp_path / "baselines"),
        AlertTracker(AlertPolicy(open_after=2, close_after=2, close_ratio=0.8)),
        InferenceConfig(batch_max=8, batch_wait_ms=5, commission_cpu_budget_s=2.0),
        Metrics(),
    )


async def collect(out: asyncio.Queue[Result], until: type, timeout_s: float = 60) -> list[Result]:
    items: list[Result] = []
    async with asyncio.timeout(timeout_s):
        while not any(isinstance(i, until) for i in items):
            items.append(await out.get())
    return items


async def test_commission_then_score(predictor: Predictor, tmp_path: Path) -> None:
    inference = stage(predictor, tmp_path)
    inbox: asyncio.Queue[Window | CommissionRequest] = asyncio.Queue()
    out: asyncio.Queue[Result] = asyncio.Queue()
    task = asyncio.create_task(inference.run(inbox, out))
    samples = healthy(predictor, 200)
    await inbox.put(CommissionRequest("p1", predictor.sensors, samples, 0, 199_000))
    items = await collect(out, AssetStatus)
    status = items[-1]
    assert isinstance(status, AssetStatus) and status.state is AssetState.HEALTHY
    assert any(isinstance(i, Event) and i.kind == "commissioned" for i in items)
    assert inference.store.exists("p1")

    window = np.ascontiguousarray(samples[-predictor.window :].T)
    await inbox.put(Window("p1", 1, 2, window))
    await inbox.put(Window("unknown", 1, 2, window))  # not commissioned: not scored
    prediction = (await collect(out, Prediction))[-1]
    assert isinstance(prediction, Prediction)
    assert prediction.asset == "p1"
    assert prediction.rul_cycles is not None and 0 <= prediction.rul_cycles <= 125
    assert prediction.anomaly_score < prediction.anomaly_threshold  # its own healthy data

    broken = window * 0 + window.max() * 3  # far outside the baseline
    for end in range(10, 13):
        await inbox.put(Window("p1", end - 5, end, broken))
    alert = (await collect(out, Alert))[-1]
    assert isinstance(alert, Alert) and alert.asset == "p1" and alert.is_open
    await inbox.join()
    rest = [out.get_nowait() for _ in range(out.qsize())]
    assert {i.asset for i in rest if isinstance(i, Prediction)} <= {"p1"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_failed_commissioning_keeps_the_stage_running(
    predictor: Predictor, tmp_path: Path
) -> None:
    inference = stage(predictor, tmp_path)
    inbox: asyncio.Queue[Window | CommissionRequest] = asyncio.Queue()
    out: asyncio.Queue[Result] = asyncio.Queue()
    task = asyncio.create_task(inference.run(inbox, out))
    too_few = healthy(predictor, 10)
    await inbox.put(CommissionRequest("p2", predictor.sensors, too_few, 0, 9_000))
    items = await collect(out, AssetStatus)
    assert any(isinstance(i, Event) and i.kind == "commissioning_failed" for i in items)
    status = items[-1]
    assert isinstance(status, AssetStatus) and status.state is AssetState.COMMISSIONING
    assert "p2" not in inference.baselines
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
