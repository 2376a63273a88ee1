"""``edgewatch fleet retrain``: synced data -> a fleet model bundle that says what it saw.

Steps: list the prefix (:mod:`models.fleet.catalog`), read the retraining files with the
chosen engine (:mod:`models.fleet.read`), classify rows with the operators' labels and
split by asset (:mod:`models.fleet.data`), cut windows and shards on the driver and train
(:mod:`models.fleet.training`, :mod:`models.fleet.engines`), calibrate the fleet threshold
on the held-out assets, and write a bundle (the base bundle's RUL head carried over) with
ONNX graphs and golden windows, ready for ``edgewatch model publish``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.errors import ModelError
from models.bundle import AnomalyHead, load_bundle, save_bundle
from models.bundles import default_bundle_path
from models.fleet import data as fleet_data
from models.fleet.catalog import Catalog, load_catalog
from models.fleet.engines import ENGINES, ray_session, train_local, train_ray
from models.fleet.profiles import FleetProfile
from models.fleet.read import ReadResult, read_local, read_ray
from models.fleet.store import Store
from models.fleet.training import LoopConfig, LoopOutcome, build_windows, equal_shards
from models.network import ConvAutoencoder, reconstruction_error
from models.scoring import calibrate

#: Ray Train's workers (CPU, one each); the local engine simulates as many.
DEFAULT_WORKERS = 2
#: (stage, done, total): the CLI turns these into progress bars.
StageProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RetrainOptions:
    data: str
    profile: FleetProfile
    out: Path
    engine: str = "local"
    address: str | None = None
    workers: int = DEFAULT_WORKERS
    seed: int = 0
    epochs: int | None = None
    storage: str | None = None
    #: Start from the base bundle's fleet weights (None: the profile's choice).
    from_base: bool | None = None
    #: Add ONNX graphs and golden windows (``edgewatch model publish`` needs them).
    export_onnx: bool = True


@dataclass
class RetrainReport:
    bundle: Path
    version: str
    manifest_training: dict[str, Any]
    metrics: dict[str, Any]


def _quiet(_stage: str, _done: int, _total: int) -> None:
    return None


def retrain(options: RetrainOptions, progress: StageProgress | None = None) -> RetrainReport:
    report = progress or _quiet
    if options.engine not in ENGINES:
        raise ModelError(f"unknown engine {options.engine!r}", hint="use local or ray")
    prof = options.profile.with_options(
        seed=options.seed, epochs=options.epochs, from_base=options.from_base
    )
    base = load_bundle(default_bundle_path(prof.base_bundle))
    sensors = list(base.sensors)
    store = Store(options.data)
    report("list", 0, 1)
    catalog = load_catalog(store)
    report("list", 1, 1)
    entries = catalog.retraining
    if options.engine == "ray":
        with ray_session(options.address, options.workers) as ray:
            report("read", 0, len(entries))
            read = read_ray(store, entries, sensors)
            report("read", len(entries), len(entries))
            plan = _plan(catalog, read, prof, options)
            report("train", 0, plan[0].epochs)
            started = time.perf_counter()
            outcome = train_ray(ray, plan[0], plan[1], plan[2], options.storage, plan[5])
            wall = time.perf_counter() - started
            report("train", plan[0].epochs, plan[0].epochs)
    else:
        read = read_local(store, entries, sensors, lambda d, t: report("read", d, t))
        plan = _plan(catalog, read, prof, options)
        started = time.perf_counter()
        outcome = train_local(
            plan[0], plan[1], plan[2], lambda e, t, _m: report("train", e, t), plan[5]
        )
        wall = time.perf_counter() - started
    return _write(options, prof, base, catalog, read, plan, outcome, wall)


_Plan = tuple[
    LoopConfig, list[np.ndarray], np.ndarray, Any, dict[str, Any], dict[str, np.ndarray] | None
]


def _plan(catalog: Catalog, read: ReadResult, prof: FleetProfile, options: RetrainOptions) -> _Plan:
    sensors = [f.name for f in read.table.schema][4:-3]
    assets = fleet_data.classify(read.table, sensors, catalog.labels)
    kept = [a for a in assets if fleet_data.usable(a)]
    missing = [a.name for a in assets if not fleet_data.usable(a)]
    train, val = fleet_data.split_assets(kept, options.seed, prof.val_fraction)
    period_ms = prof.sample_period_s * 1000.0
    cfg = prof.anomaly
    base_head = load_bundle(default_bundle_path(prof.base_bundle)).anomaly
    if base_head is None:
        raise ModelError(f"base bundle {prof.base_bundle} has no anomaly model to retrain")
    floor = base_head.relative_floor if prof.from_base else None
    windows = build_windows(train, val, prof.anomaly, period_ms, floor)
    initial = (
        {k: v.detach().numpy().copy() for k, v in base_head.model.state_dict().items()}
        if prof.from_base
        else None
    )
    loop = LoopConfig(
        network=base_head.network,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=prof.learning_rate,
        patience=cfg.patience,
        seed=cfg.seed,
        workers=options.workers,
    )
    shards = equal_shards(windows.train, options.workers, cfg.seed)
    seen = {
        "all": fleet_data.describe(kept, catalog.retraining),
        "training": fleet_data.describe(train, []),
        "validation": fleet_data.describe(val, []),
    }
    seen["all"].update(
        assets_without_profile_sensors=missing,
        labels=catalog.label_counts(),
        label_objects=len(catalog.of_kind("label")),
        bad_label_objects=catalog.bad_labels,
        duplicate_keys=catalog.duplicates,
    )
    return loop, shards, windows.val, windows, seen, initial


def _write(
    options: RetrainOptions,
    prof: FleetProfile,
    base: Any,
    catalog: Catalog,
    read: ReadResult,
    plan: _Plan,
    outcome: LoopOutcome,
    train_wall_s: float,
) -> RetrainReport:
    loop, shards, _val, windows, seen, initial = plan
    model = ConvAutoencoder(loop.network)
    model.load_state_dict(outcome.state)
    model.eval()
    with torch.inference_mode():
        raw = reconstruction_error(model, torch.from_numpy(windows.calibration)).numpy()
    cal = calibrate(raw, prof.rule)
    head = AnomalyHead(
        loop.network,
        model,
        windows.fleet_scaler,
        cal.reference,
        cal.threshold,
        prof.rule,
        windows.relative_floor,
        prof.run_condition,
    )
    per_worker = []
    for w in outcome.workers:
        trained, loop_s = w["windows"], max(w["loop_seconds"], 1e-9)
        per_worker.append(
            {
                "rank": int(w["rank"]),
                "windows_trained": int(trained),
                "windows_per_s": trained / loop_s,
                "rows_per_s": trained * loop.network.window / loop_s,
                "loop_seconds": loop_s,
                "compute_seconds": w["seconds"],
            }
        )
    throughput = {
        "read": {"engine": read.engine, **read.throughput()},
        "train": {
            "engine": options.engine,
            "workers": loop.workers,
            "wall_seconds": train_wall_s,
            "per_worker": per_worker,
            "note": "windows (and rows = windows x window) each worker trained on over all "
            "epochs, per second of its training loop (the local engine runs every worker's "
            "batches in one process, so its workers share the loop's time); wall_seconds "
            "includes Ray's worker start-up",
        },
    }
    training: dict[str, Any] = {
        "source": "edgewatch fleet retrain",
        "data": {
            "url": options.data,
            "profile": prof.name,
            **seen["all"],
            "training_assets": windows.train_assets,
            "validation_assets": windows.val_assets,
            "assets_without_healthy_window": windows.skipped_assets,
            "training_rows": seen["training"]["rows"],
            "validation_rows": seen["validation"]["rows"],
        },
        "split": "by asset (BLAKE2b of seed, site, agent, asset < val_fraction), never by window",
        "labels": "rows around alerts labelled false_alarm or maintenance are healthy training "
        "data; rows inside alerts labelled fault are never trained on; unlabelled alert rows "
        "are left out",
        "anomaly": {
            "config": prof.anomaly.to_json(),
            "val_fraction": prof.val_fraction,
            "initialised_from": f"fleet:{base.version}" if initial is not None else "scratch",
            "learning_rate": loop.learning_rate,
            "engine": options.engine,
            "workers": loop.workers,
            "seed": loop.seed,
            "worker_batch": loop.worker_batch,
            "shard_windows": len(shards[0]),
            "windows_left_out_of_shards": len(windows.train) - len(shards[0]) * loop.workers,
            "epochs_run": outcome.epochs_run,
            "stopped_by": outcome.stopped_by,
            "history_tail": outcome.history[-3:],
            "calibration": "fleet threshold from held-out assets' healthy windows (fleet scaler)",
        },
        "rul": (
            f"carried over from {base.version}: retraining data holds no run-to-failure truth"
            if base.rul is not None
            else None
        ),
        "base_bundle": base.version,
        "throughput": throughput,
    }
    metrics = {
        "anomaly_train_windows": float(len(windows.train)),
        "anomaly_val_windows": float(len(windows.val)),
        "anomaly_val_loss": min(h["val_loss"] for h in outcome.history),
        "anomaly_epochs_run": float(outcome.epochs_run),
        "anomaly_fleet_threshold": cal.threshold,
        "anomaly_fleet_holdout_quantile_score": cal.holdout_quantile_score,
    }
    path = save_bundle(
        options.out,
        name=base.name,
        sensors=list(base.sensors),
        sensor_units=list(base.sensor_units),
        window=base.window,
        hop=base.hop,
        rul=base.rul,
        anomaly=head,
        training=training,
        metrics=metrics,
        sample_period_s=prof.sample_period_s,
    )
    if options.export_onnx:
        from models.onnx_export import export_bundle

        export_bundle(path, speed_seconds=0)
    bundle = load_bundle(path)
    return RetrainReport(path, bundle.version, training, metrics)
