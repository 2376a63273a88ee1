"""Inference figures of one backend, measured in a process of its own.

``python -m models.backend_bench {torch|onnx} BUNDLE [SECONDS]`` prints one JSON
line: the time to import the backend and load the bundle, the process RSS once
loaded and after the runs, windows/s through the predictor at batch 1, 16 and 64,
and single-window latency p50/p99. Each backend gets a fresh interpreter so that
neither's import, allocator or thread pools colour the other's figures; the onnx
run never imports torch (the figure ``torch_loaded`` says so).

``edgewatch bench`` runs it once per backend and prints the two side by side.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

BATCHES = (1, 16, 64)
BACKENDS = ("torch", "onnx")


class _Predicts(Protocol):
    @property
    def sensors(self) -> tuple[str, ...]: ...

    @property
    def window(self) -> int: ...

    def predict(self, windows: npt.ArrayLike) -> object: ...


def rss_mb() -> float:
    """This process's resident set (Linux /proc), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_predictor(backend: str, bundle: Path, threads: int = 1) -> _Predicts:
    """The predictor the agent would use for ``backend`` (imports happen here)."""
    if backend == "onnx":
        from models.lean import OnnxPredictor

        return OnnxPredictor(bundle, threads=threads)
    if backend == "torch":
        from models.bundle import load_bundle
        from models.predictor import Predictor

        return Predictor(load_bundle(bundle), threads=threads)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def windows_per_s(call: Callable[[], object], batch: int, seconds: float) -> float:
    call()  # warm-up: the first call allocates and picks kernels
    runs, t0 = 0, time.perf_counter()
    while True:
        call()
        runs += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return runs * batch / elapsed


def latency_ms(call: Callable[[], object], seconds: float, at_least: int = 200) -> dict[str, float]:
    call()
    samples: list[float] = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(samples) < at_least:
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    ms = np.asarray(samples) * 1000.0
    return {
        "p50": round(float(np.percentile(ms, 50)), 4),
        "p99": round(float(np.percentile(ms, 99)), 4),
        "n": float(len(ms)),
    }


def measure(backend: str, bundle: Path, seconds: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Every figure for one backend, in this process (call it in a fresh one)."""
    rss0 = rss_mb()
    t0 = time.perf_counter()
    predictor = load_predictor(backend, bundle)
    load_s = time.perf_counter() - t0
    rss_loaded = rss_mb()
    rng = np.random.default_rng(seed)
    # Raw sensor values around the scaler's healthy level would be nicer, but the
    # networks' cost does not depend on the values: unit noise is enough.
    raw = rng.standard_normal((max(BATCHES), len(predictor.sensors), predictor.window))
    raw = raw.astype(np.float32)
    rates: dict[str, float] = {}
    for batch in BATCHES:
        x = raw[:batch].copy()
        rates[str(batch)] = round(windows_per_s(partial(predictor.predict, x), batch, seconds), 1)
    single = raw[:1].copy()
    return {
        "backend": backend,
        "load_s": round(load_s, 3),
        "rss_mb": {
            "interpreter": round(rss0, 1),
            "loaded": round(rss_loaded, 1),
            "after_runs": round(rss_mb(), 1),
        },
        "windows_per_s": rates,
        "single_window_ms": latency_ms(lambda: predictor.predict(single), seconds),
        "torch_loaded": "torch" in sys.modules,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or args[0] not in BACKENDS:
        sys.stderr.write("usage: python -m models.backend_bench {torch|onnx} BUNDLE [SECONDS]\n")
        return 2
    seconds = float(args[2]) if len(args) == 3 else 1.0
    sys.stdout.write(json.dumps(measure(args[0], Path(args[1]), seconds)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
