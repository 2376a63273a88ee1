"""Probation verdicts on the figures a shadow gathered, and alert policies that follow
a swapped model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from agent.domain import Prediction
from agent.inference.alerting import AlertPolicy, AlertTracker
from agent.inference.shadow import MIN_QUANTILE_SCORES, ProbationLimits, Shadow


def _p(asset: str, end: int, *, anomalous: bool = False, rul: float | None = 20.0) -> Prediction:
    return Prediction(
        asset=asset,
        window_end_ms=end,
        model_version="v",
        anomaly_score=5.0 if anomalous else 1.0,
        anomaly_threshold=4.0,
        is_anomaly=anomalous,
        rul_cycles=rul,
    )


def _shadow(**limits: float) -> Shadow:
    return Shadow("pump@c", Path("/x"), None, ProbationLimits(windows=10, seconds=0, **limits))  # type: ignore[arg-type]


def test_a_candidate_within_limits_passes_after_enough_windows() -> None:
    shadow = _shadow()
    live = [_p("a", i, anomalous=i == 0) for i in range(10)]
    theirs = [_p("a", i, anomalous=i in (0, 1)) for i in range(10)]
    shadow.record(live[:5], theirs[:5], 0.01, 0.01)
    assert not shadow.done()
    shadow.record(live[5:], theirs[5:], 0.01, 0.01)
    assert shadow.done()
    verdict = shadow.verdict()
    # 20% against 10% live: within 1.5 x 10% + 1%? No: 20% > 16%.
    assert not verdict.passed and "alerts on 20.0% of a's windows" in verdict.reason
    relaxed = _shadow(max_alert_rate_ratio=2.0)
    relaxed.record(live, theirs, 0.01, 0.01)
    assert relaxed.verdict().passed
    assert relaxed.verdict().figures["assets"]["a"]["candidate_alert_rate"] == 0.2


def test_low_rul_counts_as_alerting_when_the_agent_alerts_on_it() -> None:
    shadow = _shadow(rul_alert_below=10.0)
    shadow.record([_p("a", i) for i in range(10)], [_p("a", i, rul=3.0) for i in range(10)], 1, 1)
    assert "alerts on 100.0%" in shadow.verdict().reason


def test_errors_end_probation_at_once_and_fail_it() -> None:
    shadow = _shadow()
    shadow.failed("ONNX Runtime: bad input")
    assert shadow.done()
    verdict = shadow.verdict()
    assert not verdict.passed
    assert verdict.reason == "it failed to score 1 batch(es) (limit 0): ONNX Runtime: bad input"


def test_a_slow_candidate_fails() -> None:
    shadow = _shadow(max_latency_ratio=3.0)
    same = [_p("a", i) for i in range(10)]
    shadow.record(same, same, 0.01, 0.05)
    assert "5.0x slower" in shadow.verdict().reason


def test_a_candidate_whose_scores_shift_upwards_fails_before_it_alerts_more() -> None:
    shadow = _shadow()
    n = MIN_QUANTILE_SCORES
    live = [_p("a", i) for i in range(n)]
    # Healthy scores at 2.5 where the live model's are at 1: below the threshold of
    # 4, so no more alerts, but the healthy margin has mostly gone.
    theirs = [replace(_p("a", i), anomaly_score=2.5) for i in range(n)]
    shadow.record(live[: n - 1], theirs[: n - 1], 0.01, 0.01)
    assert shadow.verdict().passed  # too few windows to compare quantiles
    shadow.record(live[n - 1 :], theirs[n - 1 :], 0.01, 0.01)
    verdict = shadow.verdict()
    assert not verdict.passed
    assert verdict.reason == (
        "its p50 anomaly score on a's windows is 2.5 where the live model's is 1 (limit 2x)"
    )


def _policy(open_after: int) -> AlertPolicy:
    return AlertPolicy(open_after=open_after, close_after=2, close_ratio=0.8)


def test_alert_policies_follow_a_swapped_model() -> None:
    tracker = AlertTracker(_policy(1), lambda _: _policy(1))
    assert tracker.update(_p("a", 1, anomalous=True))
    tracker.set_policies(_policy(3), lambda _: _policy(3))
    assert tracker.policy_of("b").open_after == 3
    assert not tracker.update(_p("b", 1, anomalous=True))
    assert len(tracker.open_alerts()) == 1  # a's alert stays open
