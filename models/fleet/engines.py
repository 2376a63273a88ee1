"""The two engines of fleet training: ``local`` (this process) and ``ray`` (Ray Train).

Both run :func:`models.fleet.training.run_loop` on the same shards; see that module for
why they give the same model. Ray is an optional extra (``edgewatch[fleet]``) and is
imported only here and in :mod:`models.fleet.read`, only when the ``ray`` engine is asked
for.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import torch

from agent.errors import ModelError
from models.fleet.training import (
    EpochCallback,
    LoopConfig,
    LoopOutcome,
    local_reducer,
    run_loop,
)
from models.preprocessing import FloatArray

ENGINES: Final = ("local", "ray")
_WEIGHTS = "weights.safetensors"
_OUTCOME = "outcome.json"
_INSTALL_HINT = (
    'install the fleet extra: pip install "edgewatch[fleet]" (Ray Data and Ray Train), '
    "or use --engine local"
)


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ModelError(
            "the ray engine needs Ray, which is not installed", hint=_INSTALL_HINT
        ) from None
    return ray


@contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[Any]:
    """Ray, connected to ``address`` (``ray://host:10001``, ``host:port``, ``auto``) or to
    a local instance started for this run (stopped after it). An instance this process
    already runs (tests, notebooks) is used as it is and left running."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    if address:
        kwargs["address"] = address
    else:
        # A local instance: every core, but at least one per training worker.
        kwargs["num_cpus"] = max(workers, os.cpu_count() or 1)
    # Ray Data logs every dataset's plan and progress at INFO: the CLI shows its own.
    logging.getLogger("ray").setLevel(logging.WARNING)
    try:
        ray.init(**kwargs)
    except Exception as exc:  # ConnectionError, RuntimeError, ... from ray.init
        where = address or "a local Ray instance"
        raise ModelError(
            f"cannot start or reach {where}: {exc}",
            hint="check --address (ray://head:10001 for Ray Client) and that the cluster runs",
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def train_local(
    cfg: LoopConfig,
    shards: Sequence[FloatArray],
    val: FloatArray,
    on_epoch: EpochCallback | None = None,
    initial: dict[str, FloatArray] | None = None,
) -> LoopOutcome:
    """Every worker's shard in this process, gradients added in rank order."""
    threads = torch.get_num_threads()
    try:
        return run_loop(cfg, dict(enumerate(shards)), val, local_reducer, on_epoch, initial)
    finally:
        torch.set_num_threads(threads)


def _all_reduce(grads: list[torch.Tensor]) -> torch.Tensor:
    import torch.distributed as dist

    total = grads[0].clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: its shard, gloo all-reduce, rank 0 reports the model."""
    import ray
    import ray.train
    import torch.distributed as dist
    from safetensors.torch import save_file

    cfg: LoopConfig = config["cfg"]
    rank = ray.train.get_context().get_world_rank()
    shard = ray.get(config["shards"][rank])
    val = ray.get(config["val"])
    initial = ray.get(config["initial"]) if config["initial"] is not None else None
    outcome = run_loop(cfg, {rank: shard}, val, _all_reduce, None, initial)
    everyone: list[Any] = [None] * cfg.workers
    dist.all_gather_object(everyone, outcome.workers[0])
    metrics = {"epochs_run": outcome.epochs_run}
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.contiguous() for k, v in outcome.state.items()}, str(Path(tmp) / _WEIGHTS))
        (Path(tmp) / _OUTCOME).write_text(
            json.dumps(
                {
                    "history": outcome.history,
                    "epochs_run": outcome.epochs_run,
                    "stopped_by": outcome.stopped_by,
                    "workers": everyone,
                }
            )
        )
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def train_ray(
    ray: Any,
    cfg: LoopConfig,
    shards: Sequence[FloatArray],
    val: FloatArray,
    storage: str | None = None,
    initial: dict[str, FloatArray] | None = None,
) -> LoopOutcome:
    """Ray Train's TorchTrainer: ``cfg.workers`` CPU workers, gloo, one shard each.

    ``storage`` is where Ray Train keeps the run's checkpoint (a temporary folder by
    default; on a multi-node cluster a path every node and this driver reach, e.g.
    ``s3://bucket/ray``)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from safetensors.torch import load_file

    refs = [ray.put(s) for s in shards]
    with tempfile.TemporaryDirectory(prefix="edgewatch-fleet-ray-") as tmp:
        trainer = TorchTrainer(
            _worker,
            train_loop_config={
                "cfg": cfg,
                "shards": refs,
                "val": ray.put(val),
                "initial": None if initial is None else ray.put(initial),
            },
            scaling_config=ScalingConfig(
                num_workers=cfg.workers, use_gpu=False, resources_per_worker={"CPU": 1}
            ),
            torch_config=TorchConfig(backend="gloo"),
            run_config=RunConfig(storage_path=storage or tmp, name="edgewatch-fleet"),
        )
        try:
            result = trainer.fit()
        except Exception as exc:  # TrainingFailedError and friends
            raise ModelError(f"Ray Train failed: {exc}", hint="run again with --debug") from None
        if result.checkpoint is None:
            raise ModelError("Ray Train finished without the model checkpoint")
        with result.checkpoint.as_directory() as folder:
            state = load_file(str(Path(folder) / _WEIGHTS))
            info = json.loads((Path(folder) / _OUTCOME).read_text())
    return LoopOutcome(
        state,
        [dict(h) for h in info["history"]],
        int(info["epochs_run"]),
        str(info["stopped_by"]),
        [dict(w) for w in info["workers"]],
    )
