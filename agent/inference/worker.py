"""The inference stage: batches windows from all assets and scores them in one thread.

Torch runs in a single dedicated worker thread (``model.threads`` torch threads), so
the event loop keeps the other core for MQTT and windowing. Windows are batched up to
``batch_max`` or ``batch_wait_ms``, whichever comes first: under load batches fill
at once, when idle a window waits at most ``batch_wait_ms``.

Commissioning (learning a new asset's baseline) runs beside scoring, in child
processes (ONNX Runtime backend) or a small thread pool (torch), at most
``max_commissioning`` at a time on either backend, so other assets keep being scored
and a flood of new assets cannot start more than that many trainings at once. Windows
of an asset being commissioned are held (bounded) and scored, in order, as soon as
its baseline is ready: the readings after a baseline are judged like any others.

Each asset is scored by its :class:`~agent.domain.AssetPlan`: assets with the model
bundle's sensors through the bundle's predictor (RUL, and the asset's baseline for
the anomaly score), others by their own baseline alone (no RUL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import numpy as np

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
from agent.errors import EdgewatchError
from agent.inference.alerting import AlertTracker
from agent.inference.baselines import BaselineStore, baseline_version
from agent.inference.commissioner import ChildCommissioner
from agent.inference.held import HeldWindows
from agent.inference.shadow import ProbationLimits, Shadow, Verdict
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
T = TypeVar("T")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


#: Bytes of windows held for all assets being commissioned together: stored without
#: their overlap, about 50 bytes per window of 8 sensors at hop 1, so some 600,000
#: windows; past it the newest are dropped and counted.
MAX_HELD_BYTES = 32 * 1024 * 1024


@dataclass
class InferenceConfig:
    batch_max: int = 64
    batch_wait_ms: int = 20
    threshold_override: float | None = None
    commission_cpu_budget_s: float = 30.0
    max_commissioning: int = 1
    threads: int = 1
    #: Per-asset threshold (an asset profile's), over ``threshold_override``.
    threshold_for: Callable[[str], float | None] | None = None
    #: Samples between consecutive windows of one stream (held windows share the rest).
    hop: int = 1
    max_held_bytes: int = MAX_HELD_BYTES
    #: Limits of a candidate model's shadow probation (docs/updates.md).
    probation: ProbationLimits = field(default_factory=ProbationLimits)


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
        plans: dict[str, AssetPlan] | None = None,
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
        self._slots = asyncio.Semaphore(config.max_commissioning)
        #: How each asset is scored; assets commissioned before a restart come with one.
        self.plans: dict[str, AssetPlan] = dict(plans or {})
        #: Windows of assets whose baseline is being learnt, in arrival order.
        self._held = HeldWindows(config.hop, config.max_held_bytes)
        self._background: set[asyncio.Task[None]] = set()
        #: Each asset's last RUL estimate made while it ran: held while it stands still.
        self._running_rul: dict[str, tuple[float, float | None, float | None]] = {}
        #: A candidate model in probation; only the inference thread changes it.
        self.shadow: Shadow | None = None

    @property
    def commissioning(self) -> set[str]:
        return set(self._commissioning)

    def forget(self, asset: str) -> list[Alert]:
        """Drop the asset's baseline and close its alerts (baseline reset)."""
        self.baselines.pop(asset, None)
        self.plans.pop(asset, None)
        self._running_rul.pop(asset, None)
        self._held.release(asset)
        task = self._commissioning.pop(asset, None)
        if task is not None:
            task.cancel()
        return self.tracker.forget(asset)

    def score(self, windows: Sequence[Window]) -> list[Prediction]:
        """Score windows of assets ready to be scored (runs in the inference thread).

        Windows on the model bundle's sensors go through its predictor together (one
        RUL pass for the batch); each other asset's through its own baseline.
        """
        bundled: list[Window] = []
        own: list[Window] = []
        for w in windows:
            plan = self.plans.get(w.asset)
            if plan is None or (plan.baseline and w.asset not in self.baselines):
                continue
            (bundled if plan.from_bundle else own).append(w)
        created: list[Prediction] = []
        scored_ms = now_ms()
        if bundled:
            x = np.stack([w.data for w in bundled])
            rows = [self.baselines.get(w.asset) for w in bundled]
            started = time.perf_counter()
            # Each backend is given baselines loaded for it (see runtime and commissioner).
            out = self.predictor.predict(x, rows)  # type: ignore[arg-type]
            live_s = time.perf_counter() - started
            for i, w in enumerate(bundled):
                ran = True if out.judged is None else bool(out.judged[i])
                rul = None
                if out.rul is not None and self.plans[w.asset].rul:
                    low = None if out.rul_low is None else float(out.rul_low[i])
                    high = None if out.rul_high is None else float(out.rul_high[i])
                    rul = self._hold_rul(w.asset, ran, (float(out.rul[i]), low, high))
                created.append(
                    self._prediction(
                        w,
                        out.model_version,
                        score=None if out.anomaly_score is None else float(out.anomaly_score[i]),
                        threshold=None if out.threshold is None else float(out.threshold[i]),
                        judged=ran,
                        rul=rul,
                        scored_ms=scored_ms,
                    )
                )
            if self.shadow is not None:
                self._shadow_score(self.shadow, bundled, x, rows, created, live_s)
        groups: dict[str, list[Window]] = {}
        for w in own:
            groups.setdefault(w.asset, []).append(w)
        for asset, group in groups.items():
            baseline = self.baselines[asset]
            x = np.stack([w.data for w in group])
            scores = baseline.score(x)
            judged = baseline.judged(x)
            version = self.predictor.model_version
            for i, w in enumerate(group):
                created.append(
                    self._prediction(
                        w,
                        version,
                        score=float(scores[i]),
                        threshold=baseline.threshold,
                        judged=bool(judged[i]),
                        rul=None,
                        scored_ms=scored_ms,
                    )
                )
        return created

    def _shadow_score(
        self,
        shadow: Shadow,
        windows: list[Window],
        x: Any,
        rows: list[Any],
        live: list[Prediction],
        live_s: float,
    ) -> None:
        """The candidate scores the same windows; its figures only are kept."""
        started = time.perf_counter()
        try:
            out = shadow.predictor.predict(x, rows)
        except Exception as exc:  # any failure of the candidate counts against it only
            shadow.failed(str(exc))
            return
        cand_s = time.perf_counter() - started
        theirs = []
        for i, w in enumerate(windows):
            ran = True if out.judged is None else bool(out.judged[i])
            rul = None
            if out.rul is not None and self.plans[w.asset].rul and ran:
                rul = (float(out.rul[i]), None, None)
            theirs.append(
                self._prediction(
                    w,
                    out.model_version,
                    score=None if out.anomaly_score is None else float(out.anomaly_score[i]),
                    threshold=None if out.threshold is None else float(out.threshold[i]),
                    judged=ran,
                    rul=rul,
                    scored_ms=0,
                )
            )
        shadow.record(live, theirs, live_s, cand_s)

    # Model changes run as jobs of the one inference thread: between two batches,
    # never during one, so no window is lost or scored by a half-changed stage.

    async def _in_infer(self, job: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._infer_pool, job)

    def incompatible(self, predictor: AnyPredictor) -> str | None:
        """Why ``predictor`` cannot take over from the live one without
        re-commissioning (None: it can, and every asset keeps its baseline)."""
        new, old = predictor.bundle, self.predictor.bundle
        for what, a, b in (
            ("sensors", new.sensors, old.sensors),
            ("window", new.window, old.window),
            ("hop", new.hop, old.hop),
            ("models", new.kinds, old.kinds),
        ):
            if a != b:
                return (
                    f"its {what} ({_short(a)}) differ from the live model's ({_short(b)}); "
                    "re-commissioning assets for a new sensor set is not built"
                )
        return None

    async def start_shadow(self, version: str, path: Path, predictor: AnyPredictor) -> None:
        shadow = Shadow(version, path, predictor, self.config.probation)

        def start() -> None:
            self.shadow = shadow

        await self._in_infer(start)

    def probation(self) -> dict[str, Any] | None:
        shadow = self.shadow
        return None if shadow is None else shadow.progress()

    async def judge(self) -> Verdict | None:
        """The verdict once probation is over (None while it runs)."""

        def judge() -> Verdict | None:
            shadow = self.shadow
            return shadow.verdict() if shadow is not None and shadow.done() else None

        return await self._in_infer(judge)

    async def drop_shadow(self) -> None:
        def drop() -> None:
            self.shadow = None

        await self._in_infer(drop)

    async def promote(self) -> float:
        """The candidate in probation becomes the live model; returns how long the
        inference thread was held for it, in ms."""

        def swap() -> float:
            started = time.perf_counter()
            shadow = self.shadow
            assert shadow is not None, "promote needs a candidate in probation"
            self._switch(shadow.predictor, shadow.path)
            self.shadow = None
            return (time.perf_counter() - started) * 1000

        return await self._in_infer(swap)

    async def install(self, predictor: AnyPredictor, path: Path) -> float:
        """Another model becomes live at once (rollback); any candidate is dropped."""

        def swap() -> float:
            started = time.perf_counter()
            self._switch(predictor, path)
            self.shadow = None
            return (time.perf_counter() - started) * 1000

        return await self._in_infer(swap)

    def _switch(self, predictor: AnyPredictor, path: Path) -> None:
        self.predictor = predictor
        if self.commissioner is not None:
            # Assets commissioned from now on start from the new bundle's fleet weights.
            self.commissioner.bundle = path

    def _hold_rul(
        self, asset: str, judged: bool, estimate: tuple[float, float | None, float | None]
    ) -> tuple[float, float | None, float | None] | None:
        """The estimate while the machine runs; its last running one while it stands
        still (a stopped machine does not heal: windows of idle sensors would read as
        a fresh engine). None before it has ever run."""
        if judged:
            self._running_rul[asset] = estimate
            return estimate
        return self._running_rul.get(asset)

    def _prediction(
        self,
        w: Window,
        version: str,
        *,
        score: float | None,
        threshold: float | None,
        judged: bool,
        rul: tuple[float, float | None, float | None] | None,
        scored_ms: int,
    ) -> Prediction:
        override = self.config.threshold_override
        per_asset = self.config.threshold_for
        if per_asset is not None:
            override = per_asset(w.asset) or override
        value = 0.0 if score is None or score != score else score
        limit = override if override is not None else threshold
        if limit is None or limit != limit:
            limit = float("inf")
        return Prediction(
            asset=w.asset,
            window_end_ms=w.end_ms,
            model_version=version,
            anomaly_score=value,
            anomaly_threshold=limit,
            is_anomaly=judged and value > limit,
            rul_cycles=None if rul is None else rul[0],
            scored_ms=scored_ms,
            judged=judged,
            rul_low=None if rul is None else rul[1],
            rul_high=None if rul is None else rul[2],
        )

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
            if not self._held.holding(item.asset):
                batch.append(item)
            elif not self._held.add(item):
                self.metrics.windows_held_dropped += 1
            return
        asset = item.asset
        self.plans[asset] = item.plan
        if not item.plan.baseline:
            # Nothing to learn (a RUL-only bundle): scored from its first window on.
            self._ready(asset, out)
            return
        if asset not in self._commissioning:
            self._held.hold(asset)
            task = asyncio.create_task(self._commission(item, out), name=f"commission-{asset}")
            self._commissioning[asset] = task

    def _ready(self, asset: str, out: asyncio.Queue[Result]) -> None:
        task = asyncio.create_task(
            out.put(AssetStatus(asset, AssetState.HEALTHY, now_ms())), name=f"ready-{asset}"
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release(self, asset: str, out: asyncio.Queue[Result]) -> None:
        """Score the windows held while ``asset`` was commissioned, oldest first, until
        none is left; windows arriving meanwhile join the end, so order is kept."""
        while batch := self._held.take(asset, self.config.batch_max):
            await self._score_batch(batch, out)
        self._held.release(asset)

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
            async with self._slots:
                started = time.monotonic()  # the time it took, not the time it waited
                if self.commissioner is not None:
                    baseline = await self.commissioner.fit(request)
                else:
                    baseline = await loop.run_in_executor(self._commission_pool, self._fit, request)
        except asyncio.CancelledError:
            self._commissioning.pop(asset, None)
            raise
        except Exception as exc:
            # Any failure here must leave the agent running: the asset is retried
            # with fresh samples (its held windows go: no baseline will judge them).
            self._commissioning.pop(asset, None)
            self._held.release(asset)
            # Back to collecting: the windowing stage may evict it (ingest.max_assets)
            # and nothing must stay behind here; the next request brings the plan.
            self.plans.pop(asset, None)
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
                f"(threshold {baseline.threshold:.2f}{_child_cost(baseline.info)})",
                asset=asset,
                detail={"baseline_version": version, **_plain(baseline.info)},
            )
        )
        span = (request.first_ms, request.last_ms)
        await out.put(AssetStatus(asset, AssetState.HEALTHY, now_ms(), version, span))
        await self._release(asset, out)

    def _fit(self, request: CommissionRequest) -> AssetBaseline:
        from models.commission import commission
        from models.predictor import Predictor
        from models.scoring import RunCondition

        assert isinstance(self.predictor, Predictor), "in-process commissioning needs torch"
        baseline = commission(
            request.samples,
            self.predictor.bundle,
            sensors=request.sensors,
            asset=request.asset,
            scratch=not request.plan.from_bundle,
            run_condition=(
                RunCondition(plan.run_sensor, plan.run_min_fraction)
                if (plan := request.plan).run_sensor is not None
                else None
            ),
            cpu_budget_s=self.config.commission_cpu_budget_s,
            threads=self.config.threads,
        )
        self.store.save(request.asset, baseline)
        return baseline


def _short(value: object) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _child_cost(info: dict[str, object]) -> str:
    rss, cpu = info.get("child_peak_rss_mb"), info.get("child_cpu_s")
    cost = "" if rss is None else f", child process {cpu} CPU-s, peak RSS {rss} MB"
    constant = info.get("constant_sensors")
    if isinstance(constant, list) and constant:
        cost += f"; not judged, constant during the baseline: {', '.join(map(str, constant))}"
    return cost


def _plain(info: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in info.items() if isinstance(v, str | int | float | bool)}
