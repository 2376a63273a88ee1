"""Training loops: seeded, early-stopped, CPU-only, progress through a callback.

The library never prints. Callers that want a progress bar pass ``progress``, a
callable that receives a :class:`Progress` after every epoch (the CLI renders it
with rich); everything else comes back in the result objects.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

if TYPE_CHECKING:
    pass

from agent.errors import DatasetError, ModelError
from models.datasets import AssetTable
from models.metrics import nasa_score, rmse
from models.network import (
    AutoencoderConfig,
    ConvAutoencoder,
    RulCNN,
    RulConfig,
    count_parameters,
    reconstruction_error,
    seed_everything,
)
from models.preprocessing import (
    DEFAULT_RUL_CAP,
    CmapssData,
    FloatArray,
    Scaler,
    Unit,
    rul_targets,
    select_sensors,
    sliding_windows,
    split_units,
    truncate_units,
    windows_ending_at,
)
from models.scoring import ThresholdRule, calibrate


@dataclass(frozen=True)
class Progress:
    """One training step worth reporting: ``step`` of ``total`` in ``stage``."""

    stage: str
    step: int
    total: int
    metrics: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]


def _noop(_: Progress) -> None:
    return None


# --------------------------------------------------------------------------- RUL


@dataclass(frozen=True)
class RulTrainConfig:
    """Everything that decides a RUL training run (stored in the bundle manifest)."""

    window: int = 30
    hop: int = 1
    cap: float = DEFAULT_RUL_CAP
    scaler: Literal["zscore", "minmax"] = "minmax"
    include_settings: bool = False
    epochs: int = 80
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 15
    val_fraction: float = 0.2
    val_cuts_per_unit: int = 10
    test_fraction: float = 0.0
    seed: int = 0
    ensemble: int = 1
    channels: tuple[int, ...] = (32, 32, 32)
    kernel: int = 5
    squeeze: int = 8
    hidden: int = 64
    dropout: float = 0.2
    max_units: int | None = None
    threads: int = 1
    #: RUL that one row stands for (1 cycle in C-MAPSS; sample period in the RUL unit).
    rul_per_row: float = 1.0
    #: Shortest prefix a validation cut keeps (rows); C-MAPSS test units start at 31.
    min_val_rows: int = 31
    #: Dilation per convolution (empty: none), see :class:`models.network.RulConfig`.
    dilations: tuple[int, ...] = ()
    #: Stride of the first convolution, see :class:`models.network.RulConfig`.
    stride: int = 1
    #: What the learning-rate plateau schedule watches: the validation RMSE, or the
    #: training loss (cross-validation: the final model, trained on every unit, has no
    #: validation units, so the folds must train the way it will).
    plateau_on: Literal["val", "train"] = "val"
    #: Rows an asset needs before its first estimate (None: a whole window). Fewer
    #: than ``window``: the window sees a longer history once there is one, and a young
    #: asset's window is front-padded with its first row (in training as in the agent).
    min_rows: int | None = None
    #: Learning-rate schedule: halve on a plateau, or a cosine decay to zero over
    #: ``schedule_epochs`` (default ``epochs``). A decayed rate makes the last epochs
    #: settle instead of wander, so an epoch count chosen on other folds transfers.
    schedule: Literal["plateau", "cosine"] = "plateau"
    #: Horizon of the cosine schedule; the final model of a cross-validation trains
    #: fewer epochs than its folds did but must follow the same curve.
    schedule_epochs: int | None = None
    #: Training loss: squared error, or Huber (less pulled by the noisy far-from-failure
    #: windows whose capped target the sensors cannot tell apart).
    loss: Literal["mse", "huber"] = "mse"
    #: Standard deviation of Gaussian noise added to the scaled training windows.
    input_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.min_rows is not None and not 1 <= self.min_rows <= self.window:
            raise ValueError(f"min_rows {self.min_rows} must be within 1..window ({self.window})")

    @property
    def first_rows(self) -> int:
        """Rows before the first window: ``min_rows``, or the whole window."""
        return self.window if self.min_rows is None else self.min_rows

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["channels"] = list(self.channels)
        d["dilations"] = list(self.dilations)
        return d


@dataclass
class RulTrainResult:
    """Trained ensemble plus what a bundle needs to reproduce its inputs."""

    models: list[RulCNN]
    network: RulConfig
    sensors: list[str]
    sensor_units: list[str]
    scaler: Scaler
    config: RulTrainConfig
    metrics: dict[str, float]
    history: list[dict[str, float]]
    train_units: list[int]
    val_units: list[int]


def last_windows(units: Sequence[Unit], columns: Sequence[int], window: int) -> FloatArray:
    """The last window of each unit, raw values ``(n_units, sensors, window)``; short
    units are edge-padded with their first row."""
    out = [windows_ending_at(u.data[:, list(columns)], [u.n_cycles - 1], window)[0] for u in units]
    return np.stack(out).astype(np.float32)


def member_predictions(
    models: Sequence[RulCNN], x: FloatArray, batch_size: int = 4096
) -> FloatArray:
    """Each member's prediction on scaled windows ``(B, S, W)`` -> ``(members, B)``."""
    outs = []
    with torch.inference_mode():
        for m in models:
            m.eval()
            parts = [
                m(torch.from_numpy(x[i : i + batch_size])).numpy()
                for i in range(0, len(x), batch_size)
            ]
            outs.append(np.concatenate(parts) if parts else np.zeros(0, np.float32))
    stacked: FloatArray = np.stack(outs).astype(np.float32)
    return stacked


def predict_rul(models: Sequence[RulCNN], x: FloatArray, batch_size: int = 4096) -> FloatArray:
    """Mean prediction of the ensemble on scaled windows ``(B, S, W)`` -> ``(B,)``."""
    mean: FloatArray = np.mean(member_predictions(models, x, batch_size), axis=0)
    return mean.astype(np.float32)


@dataclass
class PreparedRul:
    """Training windows of some units, and the sensors and scaler fitted on them only."""

    sensors: list[str]
    columns: list[int]
    scaler: Scaler
    x_train: FloatArray
    y_train: FloatArray


def prepare_rul(data: CmapssData, cfg: RulTrainConfig, train_u: Sequence[Unit]) -> PreparedRul:
    """Choose the sensors that are not constant on ``train_u``, fit the scaler on them,
    and slide windows with capped RUL targets (nothing here sees other units)."""
    candidates = list(data.columns if cfg.include_settings else data.columns[data.n_settings :])
    cand_idx = data.column_indices(candidates)
    train_stack = np.concatenate([u.data for u in train_u])
    sensors = select_sensors(candidates, train_stack[:, cand_idx])
    cols = data.column_indices(sensors)
    scaler = Scaler.fit(train_stack[:, cols], cfg.scaler)
    xs, ys = [], []
    first = cfg.first_rows
    for u in train_u:
        y = rul_targets(u.n_cycles, cap=cfg.cap, end_rul=u.end_rul, per_row=cfg.rul_per_row)
        # A window's target is the RUL at its last row. Windows end from the
        # ``first_rows``-th row on, front-padded as the agent pads a young asset's;
        # a unit shorter than that yields its one last window.
        ends = np.arange(min(first, u.n_cycles) - 1, u.n_cycles, cfg.hop)
        x = windows_ending_at(u.data[:, cols], ends, cfg.window)
        xs.append(scaler.transform(x, axis=1))
        ys.append(y[ends].astype(np.float32))
    return PreparedRul(
        sensors, list(cols), scaler, np.concatenate(xs), np.concatenate(ys).astype(np.float32)
    )


def cut_last_windows(
    units: Sequence[Unit], prep: PreparedRul, cfg: RulTrainConfig, seed: int
) -> tuple[FloatArray, npt.NDArray[np.float64]]:
    """The test-split protocol on held-out units: each cut at random points
    (``cfg.val_cuts_per_unit`` times), its last window scaled, its true RUL capped."""
    cut = truncate_units(
        units,
        seed,
        cuts_per_unit=cfg.val_cuts_per_unit,
        min_cycles=cfg.min_val_rows,
        per_row=cfg.rul_per_row,
    )
    x = prep.scaler.transform(last_windows(cut, prep.columns, cfg.window), axis=1)
    y: npt.NDArray[np.float64] = np.minimum(np.array([u.end_rul for u in cut]), cfg.cap)
    return x, y


def rul_network(cfg: RulTrainConfig, n_sensors: int) -> RulConfig:
    return RulConfig(
        n_sensors=n_sensors,
        window=cfg.window,
        channels=cfg.channels,
        kernel=cfg.kernel,
        squeeze=cfg.squeeze,
        hidden=cfg.hidden,
        dropout=cfg.dropout,
        dilations=cfg.dilations,
        stride=cfg.stride,
    )


def train_rul_cmapss(
    data: CmapssData,
    config: RulTrainConfig | None = None,
    progress: ProgressCallback | None = None,
) -> RulTrainResult:
    """Train a RUL ensemble on a C-MAPSS training file.

    Steps: split *by unit*; choose sensors that are not constant on the training units;
    fit the scaler on training units only; slide windows with capped RUL targets; train
    each member with Adam and early stopping on validation RMSE, where the validation
    set is made of the held-out units truncated at random points (several cuts per unit)
    and scored on the last window only - the published FD001 protocol.
    """
    cfg = config or RulTrainConfig()
    report = progress or _noop
    torch.set_num_threads(cfg.threads)
    units = list(data.units)
    if cfg.max_units is not None:
        units = units[: cfg.max_units]
    if len(units) < 2:
        raise DatasetError("need at least two units to split training and validation")
    test_u: list[Unit] = []
    if cfg.test_fraction > 0:
        # Units never seen by training nor by early stopping: an unbiased estimate of
        # the last-window RMSE (validation RMSE is slightly optimistic, it picked the epoch).
        units, test_u = split_units(units, cfg.test_fraction, cfg.seed + 7)
    train_u, val_u = split_units(units, cfg.val_fraction / (1 - cfg.test_fraction), cfg.seed)
    prep = prepare_rul(data, cfg, train_u)
    sensors, cols, scaler = prep.sensors, prep.columns, prep.scaler
    y_train = prep.y_train
    x_val, y_val = cut_last_windows(val_u, prep, cfg, cfg.seed + 1)

    net_cfg = rul_network(cfg, len(sensors))
    started = time.perf_counter()
    models, history = fit_rul_members(prep, cfg, x_val, y_val, progress=report)

    pred_val = np.clip(predict_rul(models, x_val), 0.0, cfg.cap)
    metrics = {
        "val_rmse": rmse(pred_val, y_val),
        "val_nasa_score": nasa_score(pred_val, y_val),
        "val_nasa_score_per_unit": nasa_score(pred_val, y_val) / len(y_val),
        "val_windows": float(len(y_val)),
        "val_units": float(len(val_u)),
        "train_windows": float(len(y_train)),
        "train_units": float(len(train_u)),
        "parameters_per_network": float(count_parameters(models[0])),
        "ensemble_size": float(len(models)),
        "train_seconds": time.perf_counter() - started,
    }
    if test_u:
        test_cut = truncate_units(
            test_u,
            cfg.seed + 2,
            cuts_per_unit=cfg.val_cuts_per_unit,
            min_cycles=cfg.min_val_rows,
            per_row=cfg.rul_per_row,
        )
        x_test = scaler.transform(last_windows(test_cut, cols, cfg.window), axis=1)
        y_test = np.minimum(np.array([u.end_rul for u in test_cut]), cfg.cap)
        pred_test = np.clip(predict_rul(models, x_test), 0.0, cfg.cap)
        metrics["test_rmse"] = rmse(pred_test, y_test)
        metrics["test_nasa_score_per_unit"] = nasa_score(pred_test, y_test) / len(y_test)
        metrics["test_units"] = float(len(test_u))
    units_lookup = data.units_by_column
    return RulTrainResult(
        models=models,
        network=net_cfg,
        sensors=sensors,
        sensor_units=[units_lookup.get(s, "") for s in sensors],
        scaler=scaler,
        config=cfg,
        metrics=metrics,
        history=history,
        train_units=[u.unit_id for u in train_u],
        val_units=[u.unit_id for u in val_u],
    )


def _fit_rul_member(
    net_cfg: RulConfig,
    x_train: FloatArray,
    y_train: FloatArray,
    x_val: FloatArray | None,
    y_val: np.ndarray[Any, Any] | None,
    cfg: RulTrainConfig,
    seed: int,
    member: int,
    report: ProgressCallback,
    total: int,
    *,
    early_stop: bool = True,
    val_predictions: list[FloatArray] | None = None,
    stage: str = "rul",
    offset: int | None = None,
) -> tuple[RulCNN, list[dict[str, float]]]:
    """One ensemble member. With validation windows and ``early_stop``, the best epoch's
    weights are kept (patience ``cfg.patience``); otherwise all ``cfg.epochs`` run and
    the last weights are kept. ``val_predictions`` collects the member's validation
    predictions after every epoch (cross-validation picks epochs from them)."""
    seed_everything(seed)
    model = RulCNN(net_cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = _schedule(opt, cfg)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    best_rmse, best_state, best_epoch = math.inf, copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, float]] = []
    loss_fn: nn.Module = nn.HuberLoss(delta=10.0) if cfg.loss == "huber" else nn.MSELoss()
    start = member * cfg.epochs if offset is None else offset
    has_val = x_val is not None and y_val is not None and len(x_val) > 0
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        running, seen = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            xb = xt[idx]
            if cfg.input_noise > 0:
                xb = xb + cfg.input_noise * torch.randn(xb.shape, generator=gen)
            loss = loss_fn(model(xb), yt[idx])
            loss.backward()
            opt.step()
            running += loss.item() * len(idx)
            seen += len(idx)
        train_loss = running / max(seen, 1)
        val = math.nan
        if has_val:
            assert x_val is not None and y_val is not None
            pred = predict_rul([model], x_val)
            if val_predictions is not None:
                val_predictions.append(pred)
            val = rmse(np.clip(pred, 0, cfg.cap), y_val)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val if cfg.plateau_on == "val" and has_val else train_loss)
        else:
            sched.step()
        row = {
            "member": float(member),
            "epoch": float(epoch + 1),
            "train_loss": train_loss,
            "val_rmse": val,
        }
        history.append(row)
        if has_val and val < best_rmse - 1e-4:
            best_rmse, best_state, best_epoch = val, copy.deepcopy(model.state_dict()), epoch
        report(Progress(stage, start + epoch + 1, total, row))
        if early_stop and has_val and epoch - best_epoch >= cfg.patience:
            report(Progress(stage, start + cfg.epochs, total, row))
            break
    if early_stop and has_val:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


def _schedule(
    opt: torch.optim.Optimizer, cfg: RulTrainConfig
) -> torch.optim.lr_scheduler.ReduceLROnPlateau | torch.optim.lr_scheduler.CosineAnnealingLR:
    if cfg.schedule == "cosine":
        horizon = cfg.schedule_epochs or cfg.epochs
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, horizon))
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=cfg.patience // 3)


def fit_rul_members(
    prep: PreparedRul,
    cfg: RulTrainConfig,
    x_val: FloatArray | None = None,
    y_val: npt.NDArray[np.float64] | None = None,
    *,
    progress: ProgressCallback | None = None,
    early_stop: bool = True,
    val_predictions: list[list[FloatArray]] | None = None,
    stage: str = "rul",
    offset: int = 0,
    total: int | None = None,
) -> tuple[list[RulCNN], list[dict[str, float]]]:
    """Train ``cfg.ensemble`` members on prepared windows (seeds ``cfg.seed + 1000 k``).

    ``val_predictions`` receives one list per member of its per-epoch validation
    predictions; ``offset``/``total`` place the steps in a longer progress bar."""
    torch.set_num_threads(cfg.threads)
    report = progress or _noop
    net_cfg = rul_network(cfg, len(prep.sensors))
    steps = cfg.epochs * cfg.ensemble if total is None else total
    models: list[RulCNN] = []
    history: list[dict[str, float]] = []
    for member in range(cfg.ensemble):
        preds: list[FloatArray] | None = None
        if val_predictions is not None:
            preds = []
            val_predictions.append(preds)
        model, hist = _fit_rul_member(
            net_cfg,
            prep.x_train,
            prep.y_train,
            x_val,
            y_val,
            cfg,
            cfg.seed + 1000 * member,
            member,
            report,
            steps,
            early_stop=early_stop,
            val_predictions=preds,
            stage=stage,
            offset=offset + member * cfg.epochs,
        )
        models.append(model)
        history.extend(hist)
    return models, history


# --------------------------------------------------------------------------- anomaly


@dataclass(frozen=True)
class AnomalyTrainConfig:
    """Fleet autoencoder training (also the fine-tuning recipe of commissioning)."""

    window: int = 32
    hop: int = 4
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 2e-3
    patience: int = 6
    val_fraction: float = 0.2
    seed: int = 0
    channels: tuple[int, int] = (32, 16)
    kernel: int = 5
    latent: int = 16
    threads: int = 1
    #: How many random baseline-sized scalers each training asset is seen through.
    scalings_per_asset: int = 3
    #: Range of baseline lengths (rows) those scalers are fitted on (commissioning: 400-2000).
    baseline_rows: tuple[int, int] = (400, 2000)
    #: Scale floor relative to the level, see :data:`models.commission.RELATIVE_SCALE_FLOOR`.
    relative_floor: float = 0.01

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["channels"] = list(self.channels)
        d["baseline_rows"] = list(self.baseline_rows)
        return d


@dataclass
class AnomalyFitResult:
    model: ConvAutoencoder
    history: list[dict[str, float]]
    epochs_run: int
    stopped_by: str


def fit_autoencoder(
    model: ConvAutoencoder,
    x_train: FloatArray,
    x_val: FloatArray | None,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int,
    seed: int,
    cpu_budget_s: float | None = None,
    progress: ProgressCallback | None = None,
    stage: str = "anomaly",
) -> AnomalyFitResult:
    """Train ``model`` in place on scaled windows; early stopping on validation loss.

    ``cpu_budget_s`` bounds the CPU time of the *calling thread* (``time.thread_time``),
    which is what a gateway worker thread consumes when torch runs on one thread; the
    loop stops after the step that crosses it and keeps the best weights so far.
    """
    report = progress or _noop
    if len(x_train) == 0:
        raise ModelError("no training windows for the autoencoder")
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    xt = torch.from_numpy(x_train)
    xv = torch.from_numpy(x_val) if x_val is not None and len(x_val) else None
    best = math.inf
    best_state = copy.deepcopy(model.state_dict())
    best_epoch = 0
    history: list[dict[str, float]] = []
    t0 = time.thread_time()
    stopped_by = "epochs"
    epoch = 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        running, seen = 0.0, 0
        over_budget = False
        for i in range(0, len(order), batch_size):
            xb = xt[order[i : i + batch_size]]
            opt.zero_grad(set_to_none=True)
            loss = reconstruction_error(model, xb).mean()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            running += loss.item() * len(xb)
            seen += len(xb)
            if cpu_budget_s is not None and time.thread_time() - t0 > cpu_budget_s:
                over_budget = True
                break
        model.eval()
        with torch.inference_mode():
            val = (
                float(reconstruction_error(model, xv).mean()) if xv is not None else running / seen
            )
        row = {"epoch": float(epoch + 1), "train_loss": running / max(seen, 1), "val_loss": val}
        history.append(row)
        if val < best - 1e-6:
            best, best_state, best_epoch = val, copy.deepcopy(model.state_dict()), epoch
        report(Progress(stage, epoch + 1, epochs, row))
        if over_budget:
            stopped_by = "cpu_budget"
            break
        if epoch - best_epoch >= patience:
            stopped_by = "early_stopping"
            break
    model.load_state_dict(best_state)
    model.eval()
    report(Progress(stage, epochs, epochs, history[-1] if history else {}))
    return AnomalyFitResult(model, history, epoch + 1, stopped_by)


def build_autoencoder(n_sensors: int, cfg: AnomalyTrainConfig) -> ConvAutoencoder:
    return ConvAutoencoder(
        AutoencoderConfig(
            n_sensors=n_sensors,
            window=cfg.window,
            channels=cfg.channels,
            kernel=cfg.kernel,
            latent=cfg.latent,
        )
    )


@dataclass
class FleetAnomalyResult:
    """Fleet autoencoder, its fallback scaler and calibration, and how it was made."""

    model: ConvAutoencoder
    network: AutoencoderConfig
    sensors: list[str]
    scaler: Scaler
    reference: float
    threshold: float
    rule: ThresholdRule
    metrics: dict[str, float]
    history: list[dict[str, float]]
    train_assets: list[str]
    val_assets: list[str]
    relative_floor: tuple[float, ...] | None = None


def healthy_prefix(table: AssetTable) -> FloatArray:
    """Rows before the first anomalous (or unlabelled) row: the asset's healthy run."""
    bad = np.where(table.labels | ~table.known)[0]
    end = int(bad[0]) if bad.size else len(table)
    return table.values[:end].astype(np.float32)


def train_anomaly_fleet(
    tables: Sequence[AssetTable],
    config: AnomalyTrainConfig | None = None,
    rule: ThresholdRule | None = None,
    progress: ProgressCallback | None = None,
) -> FleetAnomalyResult:
    """Train the fleet autoencoder on the healthy part of many assets.

    Operating-condition awareness starts here: commissioning scales an asset by the
    statistics of a short baseline that rarely covers every load level, so each
    training asset is scaled several times, each time by a scaler fitted on a random
    baseline-sized stretch of its healthy run, and the autoencoder learns to reconstruct
    the asset's *whole* healthy run in those coordinates (other loads, stops, starts).
    One more copy uses the pooled fleet scaler, the coordinates of assets that have no
    baseline yet. Assets are split (never rows): held-out assets drive early stopping and
    calibrate the fleet threshold (fleet scaler, rule of :mod:`models.scoring`).
    """
    cfg = config or AnomalyTrainConfig()
    rule = rule or ThresholdRule()
    torch.set_num_threads(cfg.threads)
    if not tables:
        raise DatasetError("no assets to train the anomaly model on")
    sensors = list(tables[0].sensors)
    if any(list(t.sensors) != sensors for t in tables):
        raise DatasetError("all assets must have the same sensor columns in the same order")
    healthy = [(t.name, fill_nan(healthy_prefix(t))) for t in tables]
    healthy = [(n, h) for n, h in healthy if len(h) >= 2 * cfg.window]
    if len(healthy) < 2:
        raise DatasetError("need at least two assets with a healthy run of 2 windows or more")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(healthy))
    n_val = max(1, round(len(healthy) * cfg.val_fraction))
    val = [healthy[i] for i in order[:n_val]]
    train = [healthy[i] for i in order[n_val:]]
    fleet_scaler = Scaler.fit(
        np.concatenate([h for _, h in train]), "zscore", relative_floor=cfg.relative_floor
    )
    spread = fleet_relative_spread([h for _, h in train])
    floor = tuple(float(max(cfg.relative_floor, s)) for s in spread)

    def windows_for(assets: list[tuple[str, FloatArray]], copies: int) -> FloatArray:
        out = []
        for _, h in assets:
            w = sliding_windows(h, cfg.window, cfg.hop)
            out.append(fleet_scaler.transform(w, axis=1))
            for _ in range(copies):
                length = int(
                    rng.integers(
                        min(cfg.baseline_rows[0], len(h)), min(cfg.baseline_rows[1], len(h)) + 1
                    )
                )
                start = int(rng.integers(0, len(h) - length + 1))
                sc = Scaler.fit(h[start : start + length], "zscore", relative_floor=floor)
                out.append(sc.transform(w, axis=1))
        return np.concatenate(out)

    x_train = windows_for(train, cfg.scalings_per_asset)
    x_val = windows_for(val, cfg.scalings_per_asset)
    seed_everything(cfg.seed)  # weight init is part of "same data + seed, same model"
    model = build_autoencoder(len(sensors), cfg)
    fit = fit_autoencoder(
        model,
        x_train,
        x_val,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        patience=cfg.patience,
        seed=cfg.seed,
        progress=progress,
    )
    val_fleet = np.concatenate(
        [fleet_scaler.transform(sliding_windows(h, cfg.window, 1), axis=1) for _, h in val]
    )
    with torch.inference_mode():
        raw = reconstruction_error(fit.model, torch.from_numpy(val_fleet)).numpy()
    cal = calibrate(raw, rule)
    metrics = {
        **{f"relative_floor_{s}": v for s, v in zip(sensors, floor, strict=True)},
        "train_windows": float(len(x_train)),
        "val_windows": float(len(x_val)),
        "val_loss": min(h["val_loss"] for h in fit.history),
        "epochs_run": float(fit.epochs_run),
        "fleet_threshold": cal.threshold,
        "fleet_holdout_quantile_score": cal.holdout_quantile_score,
        "parameters": float(count_parameters(fit.model)),
    }
    return FleetAnomalyResult(
        model=fit.model,
        network=fit.model.config,
        sensors=sensors,
        scaler=fleet_scaler,
        reference=cal.reference,
        threshold=cal.threshold,
        rule=rule,
        metrics=metrics,
        history=fit.history,
        train_assets=[n for n, _ in train],
        val_assets=[n for n, _ in val],
        relative_floor=floor,
    )


def fleet_relative_spread(assets: Sequence[FloatArray]) -> FloatArray:
    """Typical healthy spread of each sensor relative to its level, pooled over assets.

    Each asset is divided by its own per-sensor median (removing asset-to-asset level
    differences), then the pooled robust standard deviation (IQR / 1.349, so that rare
    stops do not inflate it) is taken per sensor. Sensors whose median is ~0 get 0.
    """
    parts = []
    for h in assets:
        med = np.median(h, axis=0)
        safe = np.where(np.abs(med) > 1e-9, np.abs(med), np.inf)
        parts.append(h / safe - np.sign(med) * (np.abs(med) > 1e-9))
    rel = np.concatenate(parts)
    q75, q25 = np.percentile(rel, [75, 25], axis=0)
    spread: FloatArray = ((q75 - q25) / 1.349).astype(np.float32)
    return spread


def fill_nan(x: FloatArray) -> FloatArray:
    """Carry the last finite value forward per column (leading gaps take the first)."""
    import pandas as pd  # lazily: the agent loads this module without pandas

    if np.isfinite(x).all():
        return x
    frame = pd.DataFrame(x).replace([np.inf, -np.inf], np.nan).ffill().bfill()
    return frame.to_numpy(dtype=np.float32)
