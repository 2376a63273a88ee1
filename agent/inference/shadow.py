"""Shadow probation: a candidate model scores the live model's windows, silently.

The candidate sees exactly the windows the live model scores from the bundle (same
batch, same per-asset baselines), in the inference thread, right after the live
model. Its predictions are never stored and raise nothing: only figures are kept,
per asset and in bounded memory (counts, and the last :data:`SCORES_KEPT` scores for
quantiles). At the end of probation :meth:`Shadow.verdict` compares them with the
live model's on the same windows.

An alerting window is a judged window that is anomalous or whose RUL estimate is
below ``model.rul_alert_below``: what opens alerts, without the alert hysteresis (the
same for both models).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.domain import Prediction

if TYPE_CHECKING:
    from pathlib import Path

#: Scores kept per asset and model for quantiles (memory stays bounded).
SCORES_KEPT = 1024
QUANTILES = (0.5, 0.95, 0.99)
#: Judged scores an asset needs on both sides before its quantiles are compared.
MIN_QUANTILE_SCORES = 100


@dataclass(frozen=True)
class ProbationLimits:
    windows: int = 2000
    seconds: float = 3600.0
    max_alert_rate_ratio: float = 1.5
    alert_rate_slack: float = 0.01
    max_errors: int = 0
    max_latency_ratio: float = 3.0
    rul_alert_below: float | None = None
    #: Largest candidate/live ratio of each score quantile of an asset's judged
    #: windows (both scores are normalised: about 1 on healthy data).
    max_score_quantile_ratio: float = 2.0


@dataclass
class _Side:
    alerts: int = 0
    scores: deque[float] = field(default_factory=lambda: deque(maxlen=SCORES_KEPT))

    def quantiles(self) -> list[float]:
        if not self.scores:
            return []
        values = np.quantile(np.fromiter(self.scores, float), QUANTILES)
        return [round(float(v), 4) for v in values]


@dataclass
class _Asset:
    windows: int = 0
    live: _Side = field(default_factory=_Side)
    candidate: _Side = field(default_factory=_Side)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    figures: dict[str, Any]


class Shadow:
    """One candidate in probation: its predictor and the figures gathered so far."""

    def __init__(self, version: str, path: Path, predictor: Any, limits: ProbationLimits) -> None:
        self.version = version
        self.path = path
        self.predictor = predictor
        self.limits = limits
        self.started = time.monotonic()
        self.windows = 0
        self.errors = 0
        self.last_error: str | None = None
        self.live_s = 0.0
        self.candidate_s = 0.0
        self.assets: dict[str, _Asset] = {}

    def _alerting(self, p: Prediction) -> bool:
        limit = self.limits.rul_alert_below
        low_rul = limit is not None and p.rul_cycles is not None and p.rul_cycles < limit
        return p.judged and (p.is_anomaly or low_rul)

    def record(
        self, live: list[Prediction], candidate: list[Prediction], live_s: float, cand_s: float
    ) -> None:
        """Figures of one batch scored by both (``live[i]`` and ``candidate[i]`` are
        the same window)."""
        self.live_s += live_s
        self.candidate_s += cand_s
        for mine, theirs in zip(live, candidate, strict=True):
            figures = self.assets.setdefault(mine.asset, _Asset())
            figures.windows += 1
            self.windows += 1
            for side, p in ((figures.live, mine), (figures.candidate, theirs)):
                side.alerts += self._alerting(p)
                if p.judged:
                    side.scores.append(p.anomaly_score)

    def failed(self, error: str) -> None:
        self.errors += 1
        self.last_error = error

    def progress(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        return {
            "version": self.version,
            "windows": self.windows,
            "windows_needed": self.limits.windows,
            "elapsed_s": round(elapsed, 1),
            "seconds_needed": self.limits.seconds,
            "errors": self.errors,
            "done": self.done(),
        }

    def done(self) -> bool:
        """Long enough to judge, or already failed beyond its limit."""
        if self.errors > self.limits.max_errors:
            return True
        return (
            self.windows >= self.limits.windows
            and time.monotonic() - self.started >= self.limits.seconds
        )

    def figures(self) -> dict[str, Any]:
        per_asset = {
            asset: {
                "windows": f.windows,
                "live_alert_rate": round(f.live.alerts / f.windows, 4),
                "candidate_alert_rate": round(f.candidate.alerts / f.windows, 4),
                "live_score_quantiles": f.live.quantiles(),
                "candidate_score_quantiles": f.candidate.quantiles(),
            }
            for asset, f in sorted(self.assets.items())
            if f.windows
        }
        return {
            "windows": self.windows,
            "errors": self.errors,
            "live_scoring_s": round(self.live_s, 4),
            "candidate_scoring_s": round(self.candidate_s, 4),
            "quantiles": list(QUANTILES),
            "assets": per_asset,
        }

    def verdict(self) -> Verdict:
        figures = self.figures()
        lim = self.limits
        if self.errors > lim.max_errors:
            return Verdict(
                False,
                f"it failed to score {self.errors} batch(es) (limit {lim.max_errors}): "
                f"{self.last_error}",
                figures,
            )
        for asset, f in sorted(self.assets.items()):
            if not f.windows:
                continue
            live_rate = f.live.alerts / f.windows
            cand_rate = f.candidate.alerts / f.windows
            allowed = live_rate * lim.max_alert_rate_ratio + lim.alert_rate_slack
            if cand_rate > allowed:
                return Verdict(
                    False,
                    f"it alerts on {cand_rate:.1%} of {asset}'s windows where the live model "
                    f"alerts on {live_rate:.1%} (limit {allowed:.1%})",
                    figures,
                )
        for asset, f in sorted(self.assets.items()):
            if min(len(f.live.scores), len(f.candidate.scores)) < MIN_QUANTILE_SCORES:
                continue
            for q, mine, theirs in zip(
                QUANTILES, f.live.quantiles(), f.candidate.quantiles(), strict=True
            ):
                if theirs > lim.max_score_quantile_ratio * max(mine, 0.0):
                    return Verdict(
                        False,
                        f"its p{q * 100:g} anomaly score on {asset}'s windows is {theirs:g} "
                        f"where the live model's is {mine:g} (limit "
                        f"{lim.max_score_quantile_ratio:g}x)",
                        figures,
                    )
        if self.live_s > 0 and self.candidate_s > lim.max_latency_ratio * self.live_s:
            return Verdict(
                False,
                f"it scores {self.candidate_s / self.live_s:.1f}x slower than the live model "
                f"(limit {lim.max_latency_ratio:g}x)",
                figures,
            )
        return Verdict(
            True,
            f"{self.windows} windows of {len(self.assets)} asset(s) in shadow within limits",
            figures,
        )
