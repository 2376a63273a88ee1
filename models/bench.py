"""Inference benchmark figures for ``edgewatch bench models`` (the CLI prints them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from models.backend_bench import windows_per_s
from models.bundle import Bundle
from models.network import count_parameters
from models.predictor import Predictor


@dataclass(frozen=True)
class BenchResult:
    bundle: str
    version: str
    threads: int
    batch: int
    rul_parameters: int | None
    rul_members: int | None
    anomaly_parameters: int | None
    rul_windows_per_s: float | None
    rul_single_window_ms: float | None
    anomaly_windows_per_s: float | None
    predictor_windows_per_s: float
    predictor_single_window_ms: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _latency_ms(call: Callable[[], object], min_seconds: float) -> float:
    call()
    samples: list[float] = []
    t_end = time.perf_counter() + min_seconds
    while time.perf_counter() < t_end or len(samples) < 50:
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    # Median, not mean: a shared gateway core sees scheduler hiccups that are not ours.
    return float(np.median(samples) * 1000.0)


def benchmark(
    bundle: Bundle, *, threads: int = 1, batch: int = 1024, seconds: float = 2.0, seed: int = 0
) -> BenchResult:
    """Windows/s at ``batch`` and single-window latency on ``threads`` torch threads.

    Raw RUL / autoencoder figures time the networks on pre-scaled tensors under
    ``torch.inference_mode``; predictor figures include scaling, validation and all
    heads (what the agent pays per call).
    """
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    shape = (batch, len(bundle.sensors), bundle.window)
    raw = rng.standard_normal(shape).astype(np.float32)
    xt = torch.from_numpy(raw)
    x1 = xt[:1].clone()
    predictor = Predictor(bundle, threads=threads)
    rul = bundle.rul
    ae = bundle.anomaly

    def run_rul(x: torch.Tensor) -> None:
        assert rul is not None
        with torch.inference_mode():
            acc = rul.members[0](x)
            for m in rul.members[1:]:
                acc = acc + m(x)

    def run_ae() -> None:
        assert ae is not None
        with torch.inference_mode():
            ae.model(xt)

    single = raw[:1].copy()
    return BenchResult(
        bundle=str(bundle.path),
        version=bundle.version,
        threads=threads,
        batch=batch,
        rul_parameters=count_parameters(rul.members[0]) if rul else None,
        rul_members=len(rul.members) if rul else None,
        anomaly_parameters=count_parameters(ae.model) if ae else None,
        rul_windows_per_s=windows_per_s(lambda: run_rul(xt), batch, seconds) if rul else None,
        rul_single_window_ms=_latency_ms(lambda: run_rul(x1), seconds / 2) if rul else None,
        anomaly_windows_per_s=windows_per_s(run_ae, batch, seconds) if ae else None,
        predictor_windows_per_s=windows_per_s(lambda: predictor.predict(raw), batch, seconds),
        predictor_single_window_ms=_latency_ms(lambda: predictor.predict(single), seconds / 2),
    )
