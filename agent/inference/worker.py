"""The inference stage: batches windows from all assets and scores them in one thread.

Torch runs in a single dedicated worker thread (``model.threads`` torch threads), so
the event loop keeps the other core for MQTT and windowing. Windows are batched up to
``batch_max`` or ``batch_wait_ms``, whichever comes first: under load batches fill
at once, when idle a window waits at most ``batch_wait_ms``.

Commissioning (learning a new asset's baseline) runs in its own small thread pool,
at most ``max_commissioning`` at a time, so other assets keep being scored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from agent.domain import (
    Alert,
    AssetState,
    AssetStatus,
    CommissionRequest,
    Event,
    Prediction,
    Window,
)
from agent.errors import EdgewatchError
from agent.inference.alerting import AlertTracker
from agent.inference.baselines import BaselineStore, baseline_version
from agent.inference.commissioner import ChildCommissioner
from agent.logs import fields
from agent.metrics import Metrics

if TYPE_CHECKING:
    # torch comes with these: the ONNX Runtime agent must not import them at run time.
    from models.commission import AssetBaseline
    from models.lean import LeanBaseline, OnnxPredictor
    from models.predictor import Predictor

    Baseline: TypeAlias = AssetBaseline | LeanBaseline
    AnyPredictor: TypeAlias = Predictor | OnnxPredictor

log = logging.getLogger(__name__)

Result = Prediction | Alert | AssetStatus | Event


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class InferenceConfig:
    batch_max: int = 64
    batch_wait_ms: int = 20
    threshold_override: float | None = None
    commission_cpu_budget_s: float = 30.0
    max_commissioning: int = 1
    threads: int = 1


@dataclass
class _Scored:
    windows: list[Window] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)


class InferenceStage:
    """Owns the predictor, the per-asset baselines and the alert state."""

    def __init__(
        self,
        predictor: AnyPredictor,
        store: BaselineStore,
        tracker: AlertTracker,
        config: InferenceConfig,
        metrics: Metrics,
        baselines: dict[str, Baseline] | None = None,
        commissioner: ChildCommissioner | None = None,
    ) -> None:
        self.predictor = predictor
        #: None: commission in a thread of this process (torch backend).
        self.commissioner = commissioner
        self.store = store
        self.tracker = tracker
        self.config = config
        self.metrics = metrics
        self.baselines: dict[str, Baseline] = dict(baselines or {})
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="edgewatch-infer")
        self._commission_pool = ThreadPoolExecutor(
            config.max_commissioning, thread_name_prefix="edgewatch-commission"
        )
        self._commissioning: dict[str, asyncio.Task[None]] = {}

    @property
    def commissioning(self) -> set[str]:
        return set(self._commissioning)

    def forget(self, asset: str) -> list[Alert]:
        """Drop the asset's baseline and close its alerts (baseline reset)."""
        self.baselines.pop(asset, None)
        task = self._commissioning.pop(asset, None)
        if task is not None:
            task.cancel()
        return self.tracker.forget(asset)

    def score(self, windows: Sequence[Window]) -> list[Prediction]:
        """Score windows of commissioned assets (runs in the inference thread)."""
        usable = [w for w in windows if w.asset in self.baselines]
        if not usable:
            return []
        x = np.stack([w.data for w in usable])
        baselines = [self.baselines[w.asset] for w in usable]
        # Each backend is given baselines loaded for it (see runtime and commissioner).
        out = self.predictor.predict(x, baselines)  # type: ignore[arg-type]
        created = []
        scored_ms = now_ms()
        override = self.config.threshold_override
        for i, w in enumerate(usable):
            score = float(out.anomaly_score[i]) if out.anomaly_score is not None else 0.0
            judged = bool(out.judged[i]) if out.judged is not None else True
            threshold = (
                override
                if override is not None
                else float(out.threshold[i])
                if out.threshold is not None
                else float("inf")
            )
            created.append(
                Prediction(
                    asset=w.asset,
                    window_end_ms=w.end_ms,
                    model_version=out.model_version,
                    anomaly_score=score,
                    anomaly_threshold=threshold,
                    is_anomaly=judged and score > threshold,
                    rul_cycles=float(out.rul[i]) if out.rul is not None else None,
                    scored_ms=scored_ms,
                    judged=judged,
                )
            )
        return created

    async def run(
        self,
        inbox: asyncio.Queue[Window | CommissionRequest],
        out: asyncio.Queue[Result],
    ) -> None:
        loop = asyncio.get_running_loop()
        wait_s = self.config.batch_wait_ms / 1000
        try:
            while True:
                batch: list[Window] = []
                item = await inbox.get()
                taken = 1
                self._take(item, batch, out)
                deadline = loop.time() + wait_s
                while len(batch) < self.config.batch_max:
                    try:
                        item = inbox.get_nowait()
                    except asyncio.QueueEmpty:
                        remaining = deadline - loop.time()
                        if remaining <= 0 or not batch:
                            break
                        try:
                            async with asyncio.timeout(remaining):
                                item = await inbox.get()
                        except TimeoutError:
                            break
                    taken += 1
                    self._take(item, batch, out)
                try:
                    if batch:
                        await self._score_batch(batch, out)
                finally:
                    # Done only once scored and handed on, so that draining the
                    # queue on shutdown (Queue.join) means nothing is in flight.
                    for _ in range(taken):
                        inbox.task_done()
        finally:
            for task in self._commissioning.values():
                task.cancel()
            self._infer_pool.shutdown(wait=True, cancel_futures=True)
            self._commission_pool.shutdown(wait=False, cancel_futures=True)

    def _take(
        self,
        item: Window | CommissionRequest,
        batch: list[Window],
        out: asyncio.Queue[Result],
    ) -> None:
        if isinstance(item, Window):
            batch.append(item)
        elif item.asset not in self._commissioning:
            task = asyncio.create_task(self._commission(item, out), name=f"commission-{item.asset}")
            self._commissioning[item.asset] = task

    async def _score_batch(self, batch: list[Window], out: asyncio.Queue[Result]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            predictions = await loop.run_in_executor(self._infer_pool, self.score, batch)
        except EdgewatchError as exc:
            log.error(
                "inference failed for a batch", extra=fields(error=str(exc), windows=len(batch))
            )
            await out.put(
                Event(now_ms(), "inference_error", f"inference failed: {exc}", level="error")
            )
            return
        self.metrics.inference_s.observe(time.perf_counter() - started)
        self.metrics.inference_batch_windows.observe(len(batch))
        self.metrics.inference_batches += 1
        self.metrics.inference_windows += len(batch)
        self.metrics.predictions += len(predictions)
        for prediction in predictions:
            self.metrics.prediction_lag_s.observe(
                (prediction.scored_ms - prediction.window_end_ms) / 1e3
            )
            await out.put(prediction)
            for alert in self.tracker.update(prediction):
                if alert.is_open:
                    self.metrics.alerts_opened += alert.opened_ms == alert.last_update_ms
                else:
                    self.metrics.alerts_closed += 1
                await out.put(alert)

    async def _commission(self, request: CommissionRequest, out: asyncio.Queue[Result]) -> None:
        loop = asyncio.get_running_loop()
        asset = request.asset
        started = time.monotonic()
        await out.put(
            Event(
                now_ms(),
                "commissioning_started",
                f"learning the healthy baseline of {asset} from {len(request.samples)} samples",
                asset=asset,
            )
        )
        try:
            baseline: Baseline
            if self.commissioner is not None:
                baseline = await self.commissioner.fit(request)
            else:
                baseline = await loop.run_in_executor(self._commission_pool, self._fit, request)
        except asyncio.CancelledError:
            self._commissioning.pop(asset, None)
            raise
        except Exception as exc:
            # Any failure here must leave the agent running: the asset is retried
            # with fresh samples.
            self._commissioning.pop(asset, None)
            log.error("commissioning failed", extra=fields(asset=asset, error=str(exc)))
            await out.put(
                Event(
                    now_ms(),
                    "commissioning_failed",
                    f"commissioning {asset} failed: {exc}; collecting new samples",
                    level="error",
                    asset=asset,
                )
            )
            await out.put(AssetStatus(asset, AssetState.COMMISSIONING, now_ms()))
            return
        self._commissioning.pop(asset, None)
        self.baselines[asset] = baseline
        version = baseline_version(baseline)
        log.info(
            "asset commissioned",
            extra=fields(asset=asset, threshold=round(baseline.threshold, 3), version=version),
        )
        await out.put(
            Event(
                now_ms(),
                "commissioned",
                f"{asset} commissioned in {time.monotonic() - started:.1f} s "
                f"(threshold {baseline.threshold:.2f})",
                asset=asset,
                detail={"baseline_version": version, **_plain(baseline.info)},
            )
        )
        await out.put(AssetStatus(asset, AssetState.HEALTHY, now_ms(), version))

    def _fit(self, request: CommissionRequest) -> AssetBaseline:
        from models.commission import commission
        from models.predictor import Predictor

        assert isinstance(self.predictor, Predictor), "in-process commissioning needs torch"
        baseline = commission(
            request.samples,
            self.predictor.bundle,
            sensors=request.sensors,
            asset=request.asset,
            cpu_budget_s=self.config.commission_cpu_budget_s,
            threads=self.config.threads,
        )
        self.store.save(request.asset, baseline)
        return baseline


def _plain(info: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in info.items() if isinstance(v, str | int | float | bool)}
