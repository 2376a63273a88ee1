"""The inference stage with a real shipped bundle and real commissioning (small budgets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from agent.domain import (
    Alert,
    AssetPlan,
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
from models.onnx_export import golden_windows
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


def stage(
    predictor: Predictor, tmp_path: Path, commissioner: object = None, max_commissioning: int = 1
) -> InferenceStage:
    return InferenceStage(
        predictor,
        BaselineStore(tmp_path / "baselines"),
        AlertTracker(AlertPolicy(open_after=2, close_after=2, close_ratio=0.8)),
        InferenceConfig(
            batch_max=8,
            batch_wait_ms=5,
            commission_cpu_budget_s=2.0,
            max_commissioning=max_commissioning,
        ),
        Metrics(),
        commissioner=commissioner,  # type: ignore[arg-type]
    )


def bundle_plan(predictor: Predictor) -> AssetPlan:
    return AssetPlan(predictor.sensors, from_bundle=True, rul=True)


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
    samples = healthy(predictor, 400)
    await inbox.put(CommissionRequest("p1", bundle_plan(predictor), samples, 0, 199_000))
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
    await inbox.put(CommissionRequest("p2", bundle_plan(predictor), too_few, 0, 9_000))
    items = await collect(out, AssetStatus)
    assert any(isinstance(i, Event) and i.kind == "commissioning_failed" for i in items)
    status = items[-1]
    assert isinstance(status, AssetStatus) and status.state is AssetState.COMMISSIONING
    assert "p2" not in inference.baselines
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_unknown_machine_is_scored_by_its_own_baseline_in_order(
    predictor: Predictor, tmp_path: Path
) -> None:
    # Three sensors no bundle has: an autoencoder of its own, no RUL. Windows that
    # arrive while it is commissioned are held, then scored in order.
    inference = stage(predictor, tmp_path)
    inbox: asyncio.Queue[Window | CommissionRequest] = asyncio.Queue()
    out: asyncio.Queue[Result] = asyncio.Queue()
    task = asyncio.create_task(inference.run(inbox, out))
    rng = np.random.default_rng(3)
    t = np.arange(400)
    samples = np.stack(
        [np.sin(t / 7), 20 + np.cos(t / 11), 5 + 0.1 * rng.normal(size=400)], axis=1
    ).astype(np.float32)
    plan = AssetPlan(("a_g", "b_c", "c_bar"), from_bundle=False, rul=False)
    await inbox.put(CommissionRequest("rig-1", plan, samples, 0, 399_000))
    ends = list(range(1000, 1010))
    for end in ends:
        recent = np.ascontiguousarray(samples[-predictor.window :].T)
        await inbox.put(Window("rig-1", end - 30, end, recent))
    items = await collect(out, AssetStatus)
    status = items[-1]
    assert isinstance(status, AssetStatus) and status.state is AssetState.HEALTHY
    predictions: list[Prediction] = []
    async with asyncio.timeout(30):
        while len(predictions) < len(ends):
            item = await out.get()
            if isinstance(item, Prediction):
                predictions.append(item)
    assert [p.window_end_ms for p in predictions] == ends
    assert all(p.rul_cycles is None for p in predictions)
    assert all(p.anomaly_score < p.anomaly_threshold < float("inf") for p in predictions)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_rul_only_plan_is_scored_without_commissioning(
    predictor: Predictor, tmp_path: Path
) -> None:
    inference = stage(predictor, tmp_path)
    inbox: asyncio.Queue[Window | CommissionRequest] = asyncio.Queue()
    out: asyncio.Queue[Result] = asyncio.Queue()
    task = asyncio.create_task(inference.run(inbox, out))
    plan = AssetPlan(predictor.sensors, from_bundle=True, rul=True, baseline=False)
    empty = np.empty((0, len(predictor.sensors)), np.float32)
    await inbox.put(CommissionRequest("engine-1", plan, empty, 0, 0))
    window = np.ascontiguousarray(healthy(predictor, predictor.window).T)
    await inbox.put(Window("engine-1", 1, 2, window))
    items = await collect(out, Prediction)
    assert not any(isinstance(i, Event) and i.kind.startswith("commission") for i in items)
    assert any(isinstance(i, AssetStatus) and i.state is AssetState.HEALTHY for i in items)
    prediction = items[-1]
    assert isinstance(prediction, Prediction)
    assert prediction.rul_cycles is not None and not prediction.is_anomaly
    assert not inference.store.exists("engine-1")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class GatedCommissioner:
    """Stands in for the child commissioner: each fit waits for the test to let it go."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def fit(self, request: CommissionRequest) -> object:
        self.running += 1
        self.most = max(self.most, self.running)
        self.started.set()
        try:
            await self.release.wait()
            raise RuntimeError("no baseline in this test")
        finally:
            self.running -= 1


async def test_commissioning_is_bounded_by_max_commissioning(
    predictor: Predictor, tmp_path: Path
) -> None:
    gate = GatedCommissioner()
    inference = stage(predictor, tmp_path, commissioner=gate, max_commissioning=2)
    inbox: asyncio.Queue[Window | CommissionRequest] = asyncio.Queue()
    out: asyncio.Queue[Result] = asyncio.Queue()
    task = asyncio.create_task(inference.run(inbox, out))
    samples = healthy(predictor, 100)
    for i in range(6):
        await inbox.put(CommissionRequest(f"fake-{i}", bundle_plan(predictor), samples, 0, 1))
    await inbox.join()
    async with asyncio.timeout(10):
        await gate.started.wait()
    assert len(inference.commissioning) == 6  # all waiting or running...
    assert gate.running == 2  # ...but only two at a time
    gate.release.set()
    failed = 0
    async with asyncio.timeout(10):
        while failed < 6:
            item = await out.get()
            failed += isinstance(item, Event) and item.kind == "commissioning_failed"
    assert gate.most == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_rul_holds_its_last_running_value_while_the_machine_stands_still(
    tmp_path: Path,
) -> None:
    pump = Predictor(load_bundle(default_bundle_path("pump")))
    fleet = pump.bundle.anomaly
    assert fleet is not None and fleet.run_condition is not None
    inference = stage(pump, tmp_path)
    inference.plans["pump-1"] = AssetPlan(pump.sensors, from_bundle=True, rul=True, baseline=False)
    run = pump.sensors.index(fleet.run_condition.sensor)
    level = np.asarray(fleet.scaler.offset, np.float32)
    rng = np.random.default_rng(3)

    def window(end: int, running: bool, wear: float = 0.0) -> Window:
        data = np.repeat(level[:, None], pump.window, axis=1)
        data = data + rng.normal(0, 0.01, data.shape).astype(np.float32) * np.abs(data)
        data[0] += wear  # vibration: what wear looks like to the RUL head
        if not running:
            data[run] = 0.0
        return Window("pump-1", end - pump.window + 1, end, np.ascontiguousarray(data))

    # Stopped before it ever ran: nothing to hold yet.
    (first,) = inference.score([window(100, running=False)])
    assert not first.judged and first.rul_cycles is None
    ran = inference.score([window(200 + i, running=True, wear=w) for i, w in enumerate((0.0, 2.0))])
    assert all(p.judged and p.rul_cycles is not None for p in ran)
    stopped = inference.score([window(300 + i, running=False) for i in range(3)])
    # Idle sensors read as a fresh machine; the estimate stays where running left it.
    assert all(not p.judged for p in stopped)
    assert [p.rul_cycles for p in stopped] == [ran[-1].rul_cycles] * 3
    again = inference.score([window(400, running=True, wear=4.0)])
    assert again[0].judged and again[0].rul_cycles != ran[-1].rul_cycles


def test_predictions_carry_the_bundles_rul_interval(tmp_path: Path) -> None:
    from tests.models.test_interval import interval_bundle

    bundle = load_bundle(interval_bundle(tmp_path / "b"))
    predictor = Predictor(bundle)
    inference = stage(predictor, tmp_path)
    inference.plans["e1"] = AssetPlan(bundle.sensors, from_bundle=True, rul=True, baseline=False)
    assert bundle.rul is not None
    x = golden_windows(bundle.rul.scaler, bundle.window, n=3)
    made = inference.score([Window("e1", i, i + bundle.window, x[i]) for i in range(3)])
    want = predictor.predict(x)
    assert want.rul_low is not None and want.rul_high is not None
    assert [p.rul_low for p in made] == pytest.approx(want.rul_low.tolist())
    assert [p.rul_high for p in made] == pytest.approx(want.rul_high.tolist())
    assert all(p.rul_low < p.rul_cycles < p.rul_high for p in made)  # type: ignore[operator]
