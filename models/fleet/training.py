"""Windows, scalers and the sharded training loop shared by the local and the Ray engine.

The recipe is the shipped pump bundle's (:func:`models.train.train_anomaly_fleet`): each
training asset is seen through the pooled fleet scaler and through several scalers fitted
on random baseline-sized stretches of its own healthy rows (the coordinates commissioning
will put it in), held-out assets stop the training early and calibrate the fleet threshold.
Windows never span a gap in the data (:meth:`models.fleet.data.AssetRows.runs`).

Data parallelism, and why local and Ray give the same model: the training windows are
cut on the driver into ``workers`` shards of equal length (a seeded permutation, dealt
round-robin). At every step each worker takes the next batch of its own shard (its own
seeded order per epoch), computes the gradient of its batch's mean loss, the gradients
are summed over the workers and divided by their number, and every replica takes the same
Adam step. The ``ray`` engine sums with ``torch.distributed.all_reduce`` (gloo) across
Ray Train workers; the ``local`` engine runs the workers' batches one after the other in
one process and adds their gradients itself. Torch runs on one thread in both, so each
worker's gradient is the same bytes, and a sum of two float32 tensors does not depend on
the order of its operands: with two workers the two engines give bit-identical weights
(tested). With more workers the sum's grouping may differ between gloo and the local loop,
so weights agree to float rounding only.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agent.errors import DatasetError
from models.fleet.data import NORMAL, AssetRows
from models.network import AutoencoderConfig, ConvAutoencoder, reconstruction_error, seed_everything
from models.preprocessing import FloatArray, Scaler, sliding_windows
from models.train import AnomalyTrainConfig, fill_nan, fleet_relative_spread

#: Called after every epoch with (epoch, epochs, metrics).
EpochCallback = Callable[[int, int, dict[str, float]], None]
#: Sums one flat gradient per local worker over every worker of the run.
Reducer = Callable[[list[torch.Tensor]], torch.Tensor]


def healthy_runs(rows: AssetRows, period_ms: float, window: int) -> list[FloatArray]:
    """The asset's contiguous NORMAL stretches of at least one window, gaps filled."""
    out = []
    for a, b in rows.runs(rows.row_class == NORMAL, period_ms):
        if b - a < window:
            continue
        run = rows.values[a:b].astype(np.float32)
        if not np.isfinite(run).any(axis=0).all():
            continue  # a sensor silent for the whole stretch: nothing to fill it with
        out.append(fill_nan(run))
    return out


@dataclass
class Windows:
    """Scaled training and validation windows, the fleet scaler and calibration data."""

    train: FloatArray
    val: FloatArray
    fleet_scaler: Scaler
    relative_floor: tuple[float, ...]
    #: Held-out assets' healthy windows at hop 1 in fleet coordinates (calibration).
    calibration: FloatArray
    train_assets: list[str]
    val_assets: list[str]
    #: Assets with no healthy stretch of a window's length (not used).
    skipped_assets: list[str] = field(default_factory=list)


def build_windows(
    train: Sequence[AssetRows],
    val: Sequence[AssetRows],
    cfg: AnomalyTrainConfig,
    period_ms: float,
    floor_at_least: tuple[float, ...] | None = None,
) -> Windows:
    """Scaled windows of the training and validation assets (deterministic in ``cfg.seed``).

    ``floor_at_least``: the base bundle's per-sensor scale floor. Commissioning scales
    each asset by at least it, so a network that starts from the base weights keeps the
    coordinates they were learnt in unless the gateways' data shows a wider spread (a
    narrower floor learnt from a few days of a few assets would make every asset's scale
    tighter than its weights expect: false alarms).
    """
    rng = np.random.default_rng(cfg.seed)
    skipped: list[str] = []

    def runs_of(assets: Sequence[AssetRows]) -> list[tuple[str, list[FloatArray]]]:
        kept = []
        for a in assets:
            runs = healthy_runs(a, period_ms, cfg.window)
            if runs:
                kept.append((a.name, runs))
            else:
                skipped.append(a.name)
        return kept

    train_runs, val_runs = runs_of(train), runs_of(val)
    if not train_runs or not val_runs:
        raise DatasetError(
            "no healthy stretch of a whole window in the "
            + ("training" if not train_runs else "validation")
            + " assets",
            hint="the gateways' retraining data needs baselines or sampled windows "
            "at least a window long (sync.retraining_sample_window_s)",
        )
    pooled = [np.concatenate(runs) for _, runs in train_runs]
    fleet_scaler = Scaler.fit(np.concatenate(pooled), "zscore", relative_floor=cfg.relative_floor)
    spread = fleet_relative_spread(pooled)
    floor = tuple(float(max(cfg.relative_floor, s)) for s in spread)
    if floor_at_least is not None:
        floor = tuple(max(f, float(b)) for f, b in zip(floor, floor_at_least, strict=True))

    def windows_for(assets: list[tuple[str, list[FloatArray]]]) -> FloatArray:
        out = []
        for _, runs in assets:
            w = np.concatenate([sliding_windows(r, cfg.window, cfg.hop) for r in runs])
            h = np.concatenate(runs)
            out.append(fleet_scaler.transform(w, axis=1))
            for _ in range(cfg.scalings_per_asset):
                lo = min(cfg.baseline_rows[0], len(h))
                length = int(rng.integers(lo, min(cfg.baseline_rows[1], len(h)) + 1))
                start = int(rng.integers(0, len(h) - length + 1))
                sc = Scaler.fit(h[start : start + length], "zscore", relative_floor=floor)
                out.append(sc.transform(w, axis=1))
        return np.concatenate(out).astype(np.float32)

    x_train = windows_for(train_runs)
    x_val = windows_for(val_runs)
    calibration = np.concatenate(
        [
            fleet_scaler.transform(sliding_windows(r, cfg.window, 1), axis=1)
            for _, runs in val_runs
            for r in runs
        ]
    ).astype(np.float32)
    return Windows(
        x_train,
        x_val,
        fleet_scaler,
        floor,
        calibration,
        [n for n, _ in train_runs],
        [n for n, _ in val_runs],
        skipped,
    )


def equal_shards(x: FloatArray, workers: int, seed: int) -> list[FloatArray]:
    """``workers`` shards of equal length: a seeded permutation dealt round-robin (the
    last ``len(x) % workers`` windows of the permutation are left out)."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    order = np.random.default_rng(seed).permutation(len(x))
    usable = len(order) - len(order) % workers
    if usable == 0:
        raise DatasetError(f"{len(x)} training windows cannot feed {workers} workers")
    return [np.ascontiguousarray(x[order[r:usable:workers]]) for r in range(workers)]


@dataclass(frozen=True)
class LoopConfig:
    """What decides the training loop; identical for every worker and both engines."""

    network: AutoencoderConfig
    epochs: int
    #: Global batch: each worker takes ``batch_size // workers`` windows per step.
    batch_size: int
    learning_rate: float
    patience: int
    seed: int
    workers: int

    @property
    def worker_batch(self) -> int:
        return max(1, self.batch_size // self.workers)

    def order_seed(self, epoch: int, rank: int) -> int:
        text = f"{self.seed}/{epoch}/{rank}".encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=7).digest(), "big")


@dataclass
class LoopOutcome:
    state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    epochs_run: int
    stopped_by: str
    #: Per worker handled here: windows trained (all epochs), seconds computing its
    #: gradients, and the loop's wall time (gradient exchange and validation included).
    workers: list[dict[str, float]]


def flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in model.parameters()
        ]
    )


def set_grad(model: torch.nn.Module, flat: torch.Tensor) -> None:
    at = 0
    for p in model.parameters():
        n = p.numel()
        p.grad = flat[at : at + n].view_as(p).clone()
        at += n


def run_loop(
    cfg: LoopConfig,
    shards: dict[int, FloatArray],
    val: FloatArray,
    reduce: Reducer,
    on_epoch: EpochCallback | None = None,
    initial: dict[str, FloatArray] | None = None,
) -> LoopOutcome:
    """Train one replica on the workers ``shards`` names (rank -> windows).

    The local engine passes every rank and a reducer that adds the gradients; a Ray
    worker passes its own rank and a reducer that all-reduces across the run.
    ``initial``: weights to start from (the base bundle's fleet model), else a seeded init.
    """
    torch.set_num_threads(1)  # one thread: the same gradient bytes in every process
    ranks = sorted(shards)
    lengths = {len(s) for s in shards.values()}
    if len(lengths) != 1:
        raise ValueError("shards must be of equal length")
    n = lengths.pop()
    seed_everything(cfg.seed)
    model = ConvAutoencoder(cfg.network)
    if initial is not None:
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in initial.items()})
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    xs = {r: torch.from_numpy(shards[r]) for r in ranks}
    # Each worker scores its share of the validation windows; the shares' float64 sums
    # are added like the gradients, so every replica (and engine) sees the same loss.
    xv = {r: torch.from_numpy(np.ascontiguousarray(val[r :: cfg.workers])) for r in ranks}
    b = cfg.worker_batch
    steps = math.ceil(n / b)
    best, best_epoch = math.inf, 0
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    stopped_by = "epochs"
    seen = dict.fromkeys(ranks, 0)
    busy = dict.fromkeys(ranks, 0.0)
    epoch = 0
    loop_started = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        orders = {
            r: torch.randperm(n, generator=torch.Generator().manual_seed(cfg.order_seed(epoch, r)))
            for r in ranks
        }
        loss_sums = {r: torch.zeros(1, dtype=torch.float64) for r in ranks}
        for step in range(steps):
            grads = []
            for r in ranks:
                t0 = time.perf_counter()
                xb = xs[r][orders[r][step * b : (step + 1) * b]]
                model.zero_grad(set_to_none=True)
                loss = reconstruction_error(model, xb).mean()
                loss.backward()  # type: ignore[no-untyped-call]
                grads.append(flat_grad(model))
                loss_sums[r] += float(loss.item()) * len(xb)
                seen[r] += len(xb)
                busy[r] += time.perf_counter() - t0
            total = reduce(grads)
            set_grad(model, total / cfg.workers)
            opt.step()
        # The epoch's mean training loss over every worker's windows.
        train_loss = float(reduce([loss_sums[r] for r in ranks])[0])
        model.eval()
        with torch.inference_mode():
            val_sums = [reconstruction_error(model, xv[r]).double().sum().reshape(1) for r in ranks]
        val_loss = float(reduce(val_sums)[0]) / max(len(val), 1)
        row = {
            "epoch": float(epoch + 1),
            "train_loss": train_loss / (n * cfg.workers),
            "val_loss": val_loss,
        }
        history.append(row)
        if val_loss < best - 1e-6:
            best, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch(epoch + 1, cfg.epochs, row)
        if epoch - best_epoch >= cfg.patience:
            stopped_by = "early_stopping"
            break
    loop_s = time.perf_counter() - loop_started
    return LoopOutcome(
        best_state,
        history,
        epoch + 1,
        stopped_by,
        [
            {
                "rank": float(r),
                "windows": float(seen[r]),
                "seconds": busy[r],
                "loop_seconds": loop_s,
            }
            for r in ranks
        ],
    )


def local_reducer(grads: list[torch.Tensor]) -> torch.Tensor:
    """The sum of every worker's gradient, added in rank order."""
    total = grads[0].clone()
    for g in grads[1:]:
        total = total + g
    return total


def state_to_numpy(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}
