"""Wires the stages together with bounded queues and runs them in one TaskGroup.

::

    MqttLink -> Subscriber --inbound--> WindowAssembler --windows--> InferenceStage
                                             |                            |
                                             +--records--> Recorder <--results (router)
                                                              |              |
                                                    ack after commit    AlertPublisher

Stages only meet here. Shutdown (:meth:`Agent.request_stop`, SIGTERM/SIGINT): the
subscriber stops taking messages, each queue is drained in flow order (everything
received is windowed, scored and committed, and acknowledged), then the link
publishes "offline" and disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from agent import __version__
from agent.domain import (
    Alert,
    AssetPlan,
    AssetState,
    AssetStatus,
    Event,
    Inbound,
    Prediction,
    Window,
)
from agent.errors import EdgewatchError, UpdateError
from agent.exporter import MetricsServer
from agent.inference.alerting import AlertPolicy, AlertTracker
from agent.inference.baselines import BaselineStore
from agent.inference.commissioner import ChildCommissioner
from agent.inference.shadow import ProbationLimits
from agent.inference.worker import InferenceConfig, InferenceStage, Result
from agent.ingest.decode import DecodeLimits
from agent.ingest.link import MqttLink
from agent.ingest.opcua import OpcUaIngest
from agent.ingest.publisher import AlertPublisher, publish_json
from agent.ingest.subscriber import Subscriber
from agent.ingest.topics import TopicMatcher, format_topic
from agent.logs import fields, loop_exception_handler
from agent.memory import release_free_memory
from agent.metrics import Metrics, process_age_s
from agent.profiles import PROFILE_CACHE_ASSETS, BundleShape, Profiles
from agent.sdnotify import Notifier
from agent.settings import Backend, Settings
from agent.storage import migrate, queries
from agent.storage.recorder import Recorder, RecorderConfig, item_rows
from agent.storage.retention import RetentionPolicy, apply_retention
from agent.storage.writer import Heartbeat, Item, Writer
from agent.sync import SyncStage
from agent.sync.budget import BudgetDuty, prepare
from agent.updates.lifecycle import Configured, ModelLifecycle, bundle_version
from agent.windowing.assembler import WindowAssembler
from agent.windowing.queue import WindowQueue
from models.bundles import SHIPPED, default_bundle_path
from models.lean import has_graphs, onnxruntime_available
from models.updates.store import ModelStore, StoreState, discard_partial

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from agent.dashboard.server import DashboardServer
    from agent.ingest.sparkplug import SparkplugSubscriber
    from agent.publish.sparkplug_out import SparkplugPublisher
    from models.bundle import Bundle
    from models.lean import LeanBundle, OnnxPredictor
    from models.predictor import Predictor

log = logging.getLogger(__name__)

Q = TypeVar("Q")

#: Queue bounds. Inbound and records block when full (backpressure to the broker);
#: the inference queue sheds older windows (see agent.windowing.queue). Queues of
#: messages are bounded in readings, not messages, because a batch message may
#: carry a thousand of them (a queued reading costs ~0.6 KB).
INBOUND_QUEUE_ROWS = 2048
INFERENCE_QUEUE = 1024
RESULTS_QUEUE = 4096
#: A full transaction (storage.commit_max_rows by default) behind the one being
#: committed, about 4 MB: the queues' bounds are what the agent's memory peaks at.
RECORDS_QUEUE_ROWS = 6000
ALERTS_QUEUE = 1024
#: Each stage gets this long to drain on shutdown (the whole stop stays under 10 s).
DRAIN_TIMEOUT_S = 2.0
HOUSEKEEPING_INTERVAL_S = 5.0
#: Young-generation GC threshold raised from 700: the hot path allocates many small
#: short-lived objects per message, and most die young without cycles.
GC_THRESHOLDS = (20_000, 20, 20)
RETENTION_INTERVAL_S = 3600.0


class RowBoundedQueue(asyncio.Queue[Q]):
    """An asyncio queue whose bound is a number of rows, not of items.

    ``put`` waits while the queued items hold ``max_rows`` rows or more (one item is
    always accepted into an empty queue, however large).
    """

    def __init__(self, max_rows: int, rows: Callable[[Q], int]) -> None:
        super().__init__()
        self.max_rows = max_rows
        self._rows_of = rows
        self.rows = 0

    def full(self) -> bool:
        return self.rows >= self.max_rows

    def _put(self, item: Q) -> None:
        self.rows += self._rows_of(item)
        super()._put(item)

    def _get(self) -> Q:
        item: Q = super()._get()
        self.rows -= self._rows_of(item)
        return item


def _inbound_rows(item: Inbound) -> int:
    return len(item.readings) or 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def choose_backend(requested: Backend, bundle: Path) -> Backend:
    """torch or onnx for this run: ``auto`` takes ONNX Runtime when it can."""
    usable = has_graphs(bundle) and onnxruntime_available()
    if requested is Backend.AUTO:
        return Backend.ONNX if usable else Backend.TORCH
    if requested is Backend.ONNX and not onnxruntime_available():
        raise EdgewatchError(
            "model.backend is onnx but onnxruntime is not installed",
            hint="pip install 'edgewatch[onnx]', or set model.backend = torch",
        )
    if requested is Backend.ONNX and not has_graphs(bundle):
        raise EdgewatchError(
            f"model.backend is onnx but bundle {bundle} has no ONNX graphs",
            hint=f"run `edgewatch model export {bundle}`, or set model.backend = torch",
        )
    return requested


def resolve_bundle(settings: Settings) -> Path:
    """The configured bundle; a shipped bundle's bare name (``cmapss-fd001``) stands for
    its directory unless a path of that name exists."""
    bundle = settings.model.bundle
    if bundle is None:
        return default_bundle_path("pump")
    if str(bundle) in SHIPPED and not bundle.exists():
        return default_bundle_path(str(bundle))
    return bundle


@dataclass
class Queues:
    inbound: asyncio.Queue[Inbound] = field(
        default_factory=lambda: RowBoundedQueue(INBOUND_QUEUE_ROWS, _inbound_rows)
    )
    inference: WindowQueue = field(default_factory=lambda: WindowQueue(INFERENCE_QUEUE))
    results: asyncio.Queue[Result] = field(default_factory=lambda: asyncio.Queue(RESULTS_QUEUE))
    records: asyncio.Queue[Item] = field(
        default_factory=lambda: RowBoundedQueue(RECORDS_QUEUE_ROWS, item_rows)
    )
    alerts: asyncio.Queue[Alert] = field(default_factory=lambda: asyncio.Queue(ALERTS_QUEUE))

    def depths(self) -> dict[str, int]:
        return {name: q.qsize() for name, q in vars(self).items()}


@dataclass(frozen=True)
class _LiveModel:
    """The model the agent starts with, and where it came from."""

    path: Path
    backend: Backend
    bundle: Bundle | LeanBundle
    predictor: Predictor | OnnxPredictor
    store: ModelStore
    configured: Configured
    #: Why the configured bundle runs instead of the store's (an event to record).
    note: Event | None


class Agent:
    """One edgewatch agent process: ``await Agent(settings).run()``."""

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.started_ms = _now_ms()
        self._stop = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.ready_s: float | None = None
        self.notifier = Notifier()
        self.model_version = ""
        self.backend: Backend | None = None
        #: The inference stage once running (the demo's view reads its probation).
        self.inference: InferenceStage | None = None
        #: OPC UA ingest once running (the demo waits for its first session).
        self.opcua: OpcUaIngest | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        s = self.settings
        t0 = time.monotonic()
        asyncio.get_running_loop().set_exception_handler(loop_exception_handler)
        db_path = s.storage.database_path
        upgrade = await asyncio.to_thread(migrate.upgrade, db_path)
        engine = await asyncio.to_thread(migrate.ensure_current, db_path)
        # Before anything writes: lets the disk budget give freed pages back to the disk.
        await asyncio.to_thread(prepare, engine)
        live = await self._live_model()
        bundle_path, backend, bundle, predictor = (
            live.path,
            live.backend,
            live.bundle,
            live.predictor,
        )
        store = BaselineStore(s.storage.data_dir / "baselines")
        commissioner: ChildCommissioner | None = None
        if backend is Backend.ONNX:
            from models.lean import LeanBaseline

            commissioner = ChildCommissioner(
                bundle_path,
                store,
                cpu_budget_s=s.model.commission_cpu_budget_s,
                threads=s.model.threads,
            )
            await asyncio.to_thread(commissioner.sweep)
            pending = await asyncio.to_thread(commissioner.torch_only)
            if pending:
                converted = await commissioner.convert(pending)
                log.info(
                    "torch baselines converted for the onnx backend",
                    extra=fields(converted=converted, failed=len(pending) - converted),
                )
            threads = s.model.threads
            baselines = await asyncio.to_thread(
                store.load_all, lambda folder: LeanBaseline.load(folder, threads=threads)
            )
        else:
            baselines = await asyncio.to_thread(store.load_all)
        self.backend = backend
        await asyncio.to_thread(
            queries.register_model,
            engine,
            version=bundle.version,
            kind="+".join(bundle.kinds),
            path=bundle_path,
            manifest=bundle.manifest,
        )

        window = s.model.window or bundle.window
        if window != bundle.window:
            raise EdgewatchError(
                f"model.window {window} does not match the bundle's window {bundle.window}",
                hint="remove model.window or use a bundle trained for that window",
            )
        hop = s.model.hop or bundle.hop
        profiles = Profiles(s.profiles, s.model)
        shape = BundleShape(
            bundle.sensors,
            has_rul=bundle.rul is not None,
            has_anomaly=bundle.anomaly is not None,
            min_rows=bundle.min_rows,
        )
        plans = resumed_plans(baselines, profiles, shape, predictor, window)
        for asset in set(baselines) - set(plans):
            del baselines[asset]  # made for another bundle or window: commission again
        tracker = AlertTracker(*self._alert_policies(bundle, profiles))
        for alert in await asyncio.to_thread(queries.open_alerts, engine, s.identity.site):
            tracker.restore(alert)

        # Everything loaded so far (torch, the model, SQLAlchemy) lives for the whole
        # process: freeze it out of the cyclic GC, whose full collections would
        # otherwise rescan it over and over on the per-message hot path.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

        queues = Queues()
        self._queues = queues
        matcher = TopicMatcher(s.mqtt.telemetry_topic, s.identity.site)
        sparkplug = (
            s.sparkplug.model_copy(
                update={"edge_node_id": s.sparkplug.edge_node_id or s.identity.agent}
            )
            if s.sparkplug.enabled
            else None
        )
        link_subscription: str | None = None
        if sparkplug is not None:
            # Sparkplug's modules are imported only when it is on: their protobuf
            # code would cost every agent about 4 MB of memory.
            from agent.ingest.sparkplug import subscription

            link_subscription = subscription(sparkplug.group_id)
        link = MqttLink(s, self.metrics, subscription=link_subscription)
        assembler = WindowAssembler(
            profiles=profiles,
            bundle=shape,
            window=window,
            hop=hop,
            reorder_samples=s.ingest.reorder_samples,
            gap_factor=s.ingest.gap_factor,
            commissioned=plans,
            metrics=self.metrics,
            dead_letter_max_bytes=s.storage.dead_letter_max_bytes,
            max_assets=s.ingest.max_assets,
        )
        unscored: list[Window] = []
        for asset in baselines:
            readings, last_end = await asyncio.to_thread(
                queries.recent_readings, engine, s.identity.site, asset, window + hop
            )
            unscored += assembler.prime(asset, readings, last_end)
        inference = InferenceStage(
            predictor,
            store,
            tracker,
            InferenceConfig(
                batch_max=s.model.batch_max,
                batch_wait_ms=s.model.batch_wait_ms,
                threshold_override=s.model.anomaly_threshold,
                commission_cpu_budget_s=s.model.commission_cpu_budget_s,
                max_commissioning=s.model.max_commissioning,
                threads=s.model.threads,
                threshold_for=lambda asset: profiles.alerts(asset).anomaly_threshold,
                hop=hop,
                probation=ProbationLimits(
                    windows=s.updates.probation_windows,
                    seconds=s.updates.probation_s,
                    max_alert_rate_ratio=s.updates.max_alert_rate_ratio,
                    alert_rate_slack=s.updates.alert_rate_slack,
                    max_errors=s.updates.max_errors,
                    max_latency_ratio=s.updates.max_latency_ratio,
                    rul_alert_below=s.model.rul_alert_below,
                    max_score_quantile_ratio=s.updates.max_score_quantile_ratio,
                ),
            ),
            self.metrics,
            baselines,
            commissioner,
            plans,
        )
        telemetry_topic = s.mqtt.telemetry_topic
        writer = Writer(
            engine,
            site=s.identity.site,
            agent=s.identity.agent,
            keep_readings=s.storage.keep_readings,
            dead_letter_max_bytes=s.storage.dead_letter_max_bytes,
            outbox_enabled=s.sync.enabled,
            topic_for=lambda asset: format_topic(
                telemetry_topic, site=s.identity.site, asset=asset
            ),
        )
        recorder = Recorder(
            writer,
            RecorderConfig(
                commit_interval_ms=s.storage.commit_interval_ms,
                commit_max_rows=s.storage.commit_max_rows,
                commit_max_wait_ms=s.storage.commit_max_wait_ms,
                # Cut a commit at three quarters of the broker's in-flight window:
                # the last quarter keeps messages coming while it is written, and
                # at the full single-message rate this stays under 10 commits/s
                # (a half made 11).
                ack_batch=max(1, s.mqtt.receive_maximum * 3 // 4),
            ),
            self.metrics,
            on_committed=link.ack,
        )
        limits = DecodeLimits.from_settings(s.ingest)
        dead_max = s.storage.dead_letter_max_bytes
        subscriber: Subscriber | SparkplugSubscriber
        spb_effects: Callable[[], Awaitable[None]] | None = None
        if sparkplug is None:
            subscriber = Subscriber(
                link, matcher, limits, queues.inbound, self.metrics, dead_max, profiles
            )
        else:
            from agent.ingest.sparkplug import REBIRTH_PUBLISH_TIMEOUT_S, SparkplugSubscriber

            subscriber = SparkplugSubscriber(
                link, matcher, limits, queues.inbound, self.metrics, dead_max, sparkplug, profiles
            )
            spb_effects = partial(
                subscriber.run_effects,
                lambda topic, payload: link.publish(
                    topic, payload, qos=0, timeout_s=REBIRTH_PUBLISH_TIMEOUT_S
                ),
                queues.records.put,
            )
        # OPC UA reads beside the MQTT subscriber, onto the same queue (asyncua is only
        # imported once it runs).
        opcua = (
            OpcUaIngest(
                s.opcua,
                s.identity.site,
                limits,
                queues.inbound,
                self.metrics,
                dead_max,
                queues.records.put,
            )
            if s.opcua.enabled
            else None
        )
        self.opcua = opcua
        publisher = AlertPublisher(link, s.mqtt.alerts_topic, s.identity.site, queues.alerts)
        spb_out: SparkplugPublisher | None = None
        if s.sparkplug.publish:
            from agent.publish.sparkplug_out import SparkplugPublisher

            spb_out = SparkplugPublisher(
                s.mqtt.host,
                s.mqtt.port,
                s.sparkplug.group_id,
                s.sparkplug.edge_node_id or s.identity.agent,
                max_pending=s.sparkplug.publish_max_pending,
            )
        sync = SyncStage(s, metrics=self.metrics) if s.sync.enabled else None
        await queues.records.put(
            Event(
                _now_ms(),
                "agent_started",
                f"edgewatch {__version__} started with model {bundle.version}",
                detail={
                    "pid": os.getpid(),
                    "database_schema": upgrade.to_revision,
                    "backup": str(upgrade.backup) if upgrade.backup else None,
                    "baselines": len(baselines),
                },
            )
        )
        log.info(
            "agent starting",
            extra=fields(
                model=bundle.version, database=str(db_path), assets=len(baselines), hop=hop
            ),
        )

        self.inference = inference
        if live.note is not None:
            await queues.records.put(live.note)
        lifecycle = await self._lifecycle(live, inference, queues, link, engine, profiles)
        self.model_version = bundle.version
        # From here only the inference stage holds the model: once a promotion or a
        # rollback replaces it, its graphs are freed (two models at most, in probation).
        del live, bundle, predictor
        exporter = self._start_exporter()
        dashboard = self._start_dashboard()
        stages: list[asyncio.Task[None]] = []
        try:
            async with asyncio.TaskGroup() as group:

                def start(coro: Awaitable[None], name: str) -> None:
                    stages.append(group.create_task(coro, name=name))  # type: ignore[arg-type]

                start(link.run(), "mqtt-link")
                start(recorder.run(queues.records), "recorder")
                start(self._route(queues, assembler, spb_out), "router")
                start(inference.run(queues.inference, queues.results), "inference")
                start(
                    assembler.run(queues.inbound, queues.records.put, queues.inference), "windowing"
                )
                start(publisher.run(), "alert-publisher")
                if spb_out is not None:
                    start(spb_out.run(), "sparkplug-out")
                start(self._health(link, queues, inference), "health")
                start(self._housekeeping(engine, store, inference, assembler, queues), "house")
                if unscored:
                    # Stored before the last stop but never scored: before anything new.
                    log.info("scoring windows left unscored", extra=fields(windows=len(unscored)))
                    for left in unscored:
                        await queues.inference.put(left)
                start(subscriber.run(), "subscriber")
                if opcua is not None:
                    start(opcua.run(), "opcua")
                if spb_effects is not None:
                    start(spb_effects(), "sparkplug-effects")
                start(self._mark_ready(link, t0), "ready")
                # Its own duty, sync or not: no export failure can switch it off.
                start(BudgetDuty(s).run(), "disk-budget")
                if sync is not None:
                    start(sync.run(), "sync")
                start(self._systemd(queues), "systemd")
                start(lifecycle.run(), "model-updates")
                if dashboard is not None:
                    start(self._dashboard(dashboard[0]), "dashboard")
                await self._stop.wait()
                log.info("stopping: draining queues")
                self.notifier.stopping()
                subscriber.stop()
                if opcua is not None:
                    opcua.stop()
                recorder.flush()
                await self._drain(queues)
                await link.close()
                for task in stages:
                    task.cancel()
        except* EdgewatchError as group_error:
            raise group_error.exceptions[0] from None
        finally:
            if exporter is not None:
                exporter.close()
            if dashboard is not None:
                dashboard[1].dispose()
            engine.dispose()
        log.info("agent stopped", extra=fields(**self.metrics.snapshot()))

    async def _live_model(self) -> _LiveModel:
        """The model store's live bundle, loaded; the configured one when the store
        has none or its bundle no longer loads.

        Leftovers of a step a kill cut short go first: partial downloads and
        extractions, bundles no pointer names.
        """
        s = self.settings
        configured = resolve_bundle(s)
        store = ModelStore(s.updates_cache_dir / "store")
        note = None
        try:
            state, removed = await asyncio.to_thread(store.recover)
        except (UpdateError, OSError) as exc:
            # The state file only changes by atomic replace; unreadable all the same
            # (a failing card): run the configured bundle rather than not at all.
            state, removed = StoreState(), []
            note = Event(
                _now_ms(),
                "model_store_unusable",
                f"the model store cannot be read ({exc}); the configured [model] bundle runs",
                level="error",
            )
        await asyncio.to_thread(
            discard_partial, s.updates_cache_dir, s.updates_cache_dir / "staged"
        )
        if removed:
            log.info("model store leftovers removed", extra=fields(removed=removed))
        path = (None if state.live is None else store.path_of(state.live)) or configured
        backend = choose_backend(s.model.backend, path)
        try:
            bundle, predictor = await asyncio.to_thread(self._load_model, path, backend)
        except EdgewatchError as exc:
            if path == configured:
                raise
            # Verified when it came in, damaged since (by hand, or the card): the
            # configured bundle is the one model still trusted to load.
            note = Event(
                _now_ms(),
                "model_store_unusable",
                f"the model store's live bundle {path} does not load ({exc}); "
                "the configured [model] bundle runs",
                level="error",
            )
            path = configured
            backend = choose_backend(s.model.backend, path)
            bundle, predictor = await asyncio.to_thread(self._load_model, path, backend)
        configured_version = (
            bundle.version
            if path == configured
            else await asyncio.to_thread(bundle_version, configured)
        )
        return _LiveModel(
            path,
            backend,
            bundle,
            predictor,
            store,
            Configured(configured_version, configured),
            note,
        )

    async def _lifecycle(
        self,
        live: _LiveModel,
        inference: InferenceStage,
        queues: Queues,
        link: MqttLink,
        engine: Any,
        profiles: Profiles,
    ) -> ModelLifecycle:
        backend = live.backend
        return ModelLifecycle(
            store=live.store,
            settings=self.settings.updates,
            cache_dir=self.settings.updates_cache_dir,
            host=inference,
            load=lambda path: self._load_model(path, backend)[1],
            configured=live.configured,
            running=live.bundle.version,
            name=live.bundle.name,
            emit=queues.results.put,
            status=lambda doc: publish_json(
                link, self._model_topic(), doc, qos=1, retain=True, timeout_s=2.0
            ),
            on_live=lambda predictor, path: self._on_live(
                engine, predictor, path, inference.tracker, profiles
            ),
        )

    def _model_topic(self) -> str:
        s = self.settings
        status = format_topic(s.mqtt.status_topic, site=s.identity.site, agent=s.identity.agent)
        return f"{status}/model"

    async def _on_live(
        self, engine: Any, predictor: Any, path: Path, tracker: AlertTracker, profiles: Profiles
    ) -> None:
        """A model became live by hot swap: alerts follow its threshold rule from the
        next prediction on (open alerts stay open), and the models table and metrics
        say so."""
        if predictor is None:
            return
        bundle = predictor.bundle
        tracker.set_policies(*self._alert_policies(bundle, profiles))
        self.model_version = bundle.version
        await asyncio.to_thread(
            queries.register_model,
            engine,
            version=bundle.version,
            kind="+".join(bundle.kinds),
            path=path,
            manifest=bundle.manifest,
        )

    def _load_model(
        self, path: Path, backend: Backend
    ) -> tuple[Bundle | LeanBundle, Predictor | OnnxPredictor]:
        threads = self.settings.model.threads
        if backend is Backend.ONNX:
            from models.lean import OnnxPredictor, load_lean_bundle

            lean = load_lean_bundle(path, threads=threads)
            return lean, OnnxPredictor(lean, threads=threads)
        from models.bundle import load_bundle
        from models.predictor import Predictor

        bundle = load_bundle(path)
        return bundle, Predictor(bundle, threads=threads)

    def _alert_policies(
        self, bundle: Bundle | LeanBundle, profiles: Profiles
    ) -> tuple[AlertPolicy, Callable[[str], AlertPolicy]]:
        """The default alert policy and each asset's (its profile's over the bundle's)."""
        return self._alert_policy(bundle, profiles, ""), lru_cache(maxsize=PROFILE_CACHE_ASSETS)(
            lambda asset: self._alert_policy(bundle, profiles, asset)
        )

    def _alert_policy(
        self, bundle: Bundle | LeanBundle, profiles: Profiles, asset: str
    ) -> AlertPolicy:
        rule = bundle.anomaly.rule if bundle.anomaly is not None else None
        own = profiles.alerts(asset)
        return AlertPolicy(
            open_after=own.open_after or (rule.on_count if rule else 3),
            close_after=own.close_after or (rule.off_count if rule else 5),
            close_ratio=own.close_ratio or (rule.off_ratio if rule else 0.8),
            rul_below=self.settings.model.rul_alert_below,
            quiet_ms=round(own.incident_quiet_s * 1000),
        )

    def _start_exporter(self) -> MetricsServer | None:
        where = self.settings.metrics.host_port
        if where is None:
            return None
        server = MetricsServer(
            *where,
            self.metrics,
            lambda: {"version": __version__, "model_version": self.model_version},
        )
        log.info("serving metrics", extra=fields(address=self.settings.metrics.address))
        return server

    def _start_dashboard(self) -> tuple[DashboardServer, Engine] | None:
        """The web dashboard (``run --http``) on its own engine, its socket bound now so
        that a port in use stops the start with one clear line."""
        if self.settings.dashboard.address is None:
            return None
        # Imported only here: Starlette, Jinja2 and uvicorn stay out of a plain agent.
        from agent.dashboard.server import for_agent
        from agent.sqlite import open_engine

        engine = open_engine(self.settings.storage.database_path, create=False)
        try:
            server = for_agent(self.settings, engine)
        except BaseException:
            engine.dispose()
            raise
        assert server is not None  # the address is set
        return server, engine

    async def _dashboard(self, server: DashboardServer) -> None:
        """The dashboard's task: a failure of the web server is logged, never the end of
        the agent (it keeps recording whatever happens to its pages)."""
        try:
            await server.run()
        except Exception:
            log.exception("the dashboard stopped; the agent keeps running")

    def _status_line(self) -> str:
        m = self.metrics
        link = "connected" if m.broker_connected else "broker DISCONNECTED"
        return f"{link}, {m.messages_per_s:g} msg/s, {m.predictions} predictions"

    async def _systemd(self, queues: Queues) -> None:
        """READY once every stage runs, then watchdog pings while the agent is alive.

        READY does not wait for the broker: a gateway often boots before its broker,
        and the agent then keeps reconnecting (STATUS says so) instead of being
        killed by systemd's start timeout in a loop. Pings need the event loop to run
        this, and a recorder with work waiting to have committed since the last one,
        otherwise systemd's WatchdogSec restarts a wedged agent.
        """
        self.notifier.ready(self._status_line())
        interval = self.notifier.ping_interval_s()
        if interval is None:
            return
        commits = self.metrics.commits
        stuck_since: float | None = None
        while True:
            waiting = queues.records.qsize() > 0
            progressed = self.metrics.commits != commits
            commits = self.metrics.commits
            now = time.monotonic()
            if not waiting or progressed:
                stuck_since = None
            elif stuck_since is None:
                stuck_since = now
            # Two silent periods (one full WatchdogSec) before giving up on the writer:
            # one slow fsync on an SD card is not a hang.
            if stuck_since is None or now - stuck_since < 2 * interval:
                self.notifier.watchdog(self._status_line())
            else:
                log.error(
                    "database writes stalled: not pinging the systemd watchdog",
                    extra=fields(stalled_s=round(now - stuck_since, 1)),
                )
            await asyncio.sleep(interval)  # systemd's period, not synchronisation

    async def _mark_ready(self, link: MqttLink, t0: float) -> None:
        await link.wait_connected()  # the link subscribes before it counts as connected
        self.ready_s = time.monotonic() - t0
        self.subscribed.set()
        self.notifier.status(self._status_line())
        age = process_age_s()
        log.info(
            "subscribed",
            extra=fields(
                run_to_subscribed_s=round(self.ready_s, 3),
                process_start_to_subscribed_s=None if age is None else round(age, 3),
            ),
        )

    async def _route(
        self, queues: Queues, assembler: WindowAssembler, spb_out: SparkplugPublisher | None
    ) -> None:
        """Results of inference go to the recorder, alerts also to MQTT, and the
        windowing stage learns which assets became (un)commissioned. Sparkplug out
        takes predictions and alerts without waiting (it coalesces, never blocks)."""
        while True:
            item = await queues.results.get()
            try:
                if spb_out is not None and isinstance(item, Prediction | Alert):
                    spb_out.offer_result(item)
                if isinstance(item, Alert):
                    await queues.alerts.put(item)
                elif isinstance(item, AssetStatus):
                    if item.state is AssetState.HEALTHY:
                        assembler.mark_commissioned(item.asset)
                    else:
                        assembler.commissioning_failed(item.asset)
                await queues.records.put(item)
            finally:
                queues.results.task_done()

    async def _drain(self, queues: Queues) -> None:
        for name in ("inbound", "inference", "results", "records", "alerts"):
            queue: asyncio.Queue[Any] = getattr(queues, name)
            try:
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    await queue.join()
            except TimeoutError:
                log.warning(
                    "queue not drained in time", extra=fields(queue=name, left=queue.qsize())
                )

    async def _health(self, link: MqttLink, queues: Queues, inference: InferenceStage) -> None:
        s = self.settings
        topic = format_topic(s.mqtt.status_topic, site=s.identity.site, agent=s.identity.agent)
        while True:
            self.metrics.queue_depths = queues.depths()
            self.metrics.rate_tick()
            health = self.health(inference)
            await queues.records.put(
                Heartbeat(
                    s.identity.agent, os.getpid(), __version__, self.started_ms, _now_ms(), health
                )
            )
            # Health is best effort: a broker that is away must not stall the loop.
            await publish_json(
                link, topic, {"state": "online", **health}, qos=0, retain=True, timeout_s=1.0
            )
            await asyncio.sleep(s.mqtt.health_interval_s)  # a period, not synchronisation

    def health(self, inference: InferenceStage) -> dict[str, Any]:
        snapshot = self.metrics.snapshot()
        snapshot.update(
            agent=self.settings.identity.agent,
            site=self.settings.identity.site,
            version=__version__,
            model_version=inference.predictor.model_version,
            backend=str(self.backend) if self.backend else None,
            # The lean backend's promise, checked from outside (status, tests).
            torch_loaded="torch" in sys.modules,
            assets_commissioned=len(inference.baselines),
            assets_commissioning=sorted(inference.commissioning),
            model_probation=inference.probation(),
            open_alerts=len(inference.tracker.open_alerts()),
            ts=time.time(),
        )
        return snapshot

    async def _housekeeping(
        self,
        engine: Any,
        store: BaselineStore,
        inference: InferenceStage,
        assembler: WindowAssembler,
        queues: Queues,
    ) -> None:
        s = self.settings
        policy = RetentionPolicy(s.storage.retention_days, s.storage.prediction_retention_days)
        next_retention = 0.0
        while True:
            # `edgewatch baseline reset` retires the folder; notice it and start over.
            for asset in list(inference.baselines):
                if not store.exists(asset):
                    for alert in inference.forget(asset):
                        await queues.results.put(alert)
                    assembler.recommission(asset)
                    await queues.results.put(
                        Event(_now_ms(), "baseline_reset", f"{asset}: baseline reset", asset=asset)
                    )
                    await queues.results.put(
                        AssetStatus(asset, AssetState.COMMISSIONING, _now_ms())
                    )
            if time.monotonic() >= next_retention:
                removed = await asyncio.to_thread(apply_retention, engine, policy, _now_ms())
                if any(removed.values()):
                    log.info("retention applied", extra=fields(**removed))
                next_retention = time.monotonic() + RETENTION_INTERVAL_S
            release_free_memory()
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)  # a period, not synchronisation


def resumed_plans(
    baselines: Mapping[str, Any],
    profiles: Profiles,
    shape: BundleShape,
    predictor: Predictor | OnnxPredictor,
    window: int,
) -> dict[str, AssetPlan]:
    """Plans of the assets commissioned before this start, from their baselines: a
    baseline fine-tuned from the bundle's fleet weights scores with the bundle; one
    learnt from scratch with its own sensors. Baselines that fit neither are left out."""
    plans: dict[str, AssetPlan] = {}
    for asset, baseline in baselines.items():
        from_bundle = str(baseline.info.get("initialised_from", "")).startswith("fleet:")
        if from_bundle:
            try:
                predictor.check_baseline(baseline)
            except EdgewatchError:
                continue
        elif baseline.window != window:
            continue
        plans[asset] = profiles.resumed_plan(asset, baseline.sensors, from_bundle, shape)
    return plans


def install_signal_handlers(agent: Agent) -> Callable[[], None]:
    """SIGTERM/SIGINT stop the agent gracefully; returns a function that removes them."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.request_stop)

    def remove() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)

    return remove


async def run_agent(
    settings: Settings, *, on_ready: Callable[[Agent], None] | None = None
) -> Agent:
    """Run until SIGTERM/SIGINT; the CLI's ``edgewatch run``."""
    agent = Agent(settings)
    remove = install_signal_handlers(agent)
    try:
        await agent.run()
    finally:
        remove()
    return agent
