"""From per-window verdicts to alerts, with smoothing and hysteresis.

An anomaly alert opens after ``open_after`` anomalous windows in a row and closes
after ``close_after`` windows in a row below ``close_ratio * threshold``: a single
noisy window neither opens nor closes anything, and a score hovering at the
threshold does not make the alert chatter. A RUL alert opens when the estimate
stays below ``rul_below`` for ``open_after`` windows and closes once it stays above
the limit (plus a margin) for ``close_after`` windows (e.g. after maintenance).

One alert is one *incident*: when the hysteresis clears, the alert stays open for
``quiet_ms`` of reading time while the machine is judged (time stopped does not
count: a fault that shows only under load is not gone because the machine stood
still overnight); an alarm within it continues the same incident (its severity only
ever escalates), and only a quiet period without one closes it. So a fault whose
score hovers around the threshold is one incident, not a string of open-close-open
alerts. ``quiet_ms = 0`` closes as soon as the hysteresis clears.

Severity: anomaly alerts are ``warning`` and become ``critical`` when the score
reaches ``CRITICAL_SCORE_FACTOR`` times the threshold; RUL alerts are ``warning``
and ``critical`` below half the limit. An update is emitted when an alert opens,
escalates or closes, not for every window. A window that is not judged (machine
stopped) leaves the anomaly state as it was, as :class:`models.scoring.Hysteresis`
does in the offline evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from agent.domain import Alert, AlertKind, Prediction, Severity

CRITICAL_SCORE_FACTOR = 2.0
RUL_CLOSE_MARGIN = 1.1
#: An open alert is updated (stored and published) when its peak score grows by this
#: factor: a failing pump going from 5x to 500x its threshold makes ~20 updates.
PEAK_STEP = 1.25


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    open_after: int
    close_after: int
    close_ratio: float
    rul_below: float | None = None
    #: How long an incident stays open after its alarm cleared (reading time).
    quiet_ms: int = 0


@dataclass
class _Track:
    above: int = 0
    below: int = 0
    alert: Alert | None = None
    #: The peak score last stored and published for the open alert.
    reported_peak: float = 0.0
    #: When the alarm of the open incident cleared (None: it is alarming).
    cleared_ms: int | None = None
    #: Judged reading time since it cleared: what the quiet period counts.
    quiet_ms: int = 0
    #: End of the previous judged window (None: none yet, or a stop came between).
    last_ms: int | None = None


class AlertTracker:
    """Per-asset alert state machines; feed predictions in window order.

    ``policy_for`` gives an asset's own policy (its profile's); default: ``policy``.
    """

    def __init__(
        self, policy: AlertPolicy, policy_for: Callable[[str], AlertPolicy] | None = None
    ) -> None:
        self.policy = policy
        self._policy_for = policy_for
        self._tracks: dict[tuple[str, AlertKind], _Track] = {}

    def set_policies(
        self, policy: AlertPolicy, policy_for: Callable[[str], AlertPolicy] | None = None
    ) -> None:
        """New policies (another model went live); alert state carries on."""
        self.policy = policy
        self._policy_for = policy_for

    def policy_of(self, asset: str) -> AlertPolicy:
        return self.policy if self._policy_for is None else self._policy_for(asset)

    def open_alerts(self) -> list[Alert]:
        return [t.alert for t in self._tracks.values() if t.alert is not None]

    def restore(self, alert: Alert) -> None:
        """Continue an alert that was open when the agent stopped."""
        self._tracks[(alert.asset, alert.kind)] = _Track(
            above=self.policy_of(alert.asset).open_after, alert=alert
        )

    def forget(self, asset: str) -> list[Alert]:
        """Close the asset's open alerts (baseline reset); returns the closed ones."""
        closed = []
        for (name, _kind), track in list(self._tracks.items()):
            if name == asset and track.alert is not None:
                closed.append(replace(track.alert, closed_ms=track.alert.last_update_ms))
                track.alert = None
        for key in [k for k in self._tracks if k[0] == asset]:
            del self._tracks[key]
        return closed

    def update(self, p: Prediction) -> list[Alert]:
        """Alerts that opened, escalated or closed with this prediction."""
        changes = []
        policy = self.policy_of(p.asset)
        if not p.judged:
            # A stopped machine says nothing about whether its fault has gone: the
            # quiet period that ends an incident counts judged time only.
            self._tracks.setdefault((p.asset, AlertKind.ANOMALY), _Track()).last_ms = None
        anomaly = (
            None
            if not p.judged
            else self._step(
                p,
                policy,
                AlertKind.ANOMALY,
                hot=p.is_anomaly,
                cool=p.anomaly_score < policy.close_ratio * p.anomaly_threshold,
                score=p.anomaly_score,
                severity=(
                    Severity.CRITICAL
                    if p.anomaly_score >= CRITICAL_SCORE_FACTOR * p.anomaly_threshold
                    else Severity.WARNING
                ),
            )
        )
        if anomaly is not None:
            changes.append(anomaly)
        limit = policy.rul_below
        if limit is not None and p.rul_cycles is not None:
            rul = self._step(
                p,
                policy,
                AlertKind.RUL,
                hot=p.rul_cycles < limit,
                cool=p.rul_cycles > limit * RUL_CLOSE_MARGIN,
                score=p.anomaly_score,
                severity=Severity.CRITICAL if p.rul_cycles < limit / 2 else Severity.WARNING,
            )
            if rul is not None:
                changes.append(rul)
        return changes

    def _step(
        self,
        p: Prediction,
        policy: AlertPolicy,
        kind: AlertKind,
        *,
        hot: bool,
        cool: bool,
        score: float,
        severity: Severity,
    ) -> Alert | None:
        track = self._tracks.setdefault((p.asset, kind), _Track())
        elapsed = 0 if track.last_ms is None else max(0, p.window_end_ms - track.last_ms)
        track.last_ms = p.window_end_ms
        track.above = track.above + 1 if hot else 0
        track.below = track.below + 1 if cool else 0
        alert = track.alert
        if alert is None:
            if track.above < policy.open_after:
                return None
            track.alert = Alert(
                asset=p.asset,
                kind=kind,
                severity=severity,
                opened_ms=p.window_end_ms,
                peak_score=score,
                last_score=score,
                rul_cycles=p.rul_cycles,
                model_version=p.model_version,
                last_update_ms=p.window_end_ms,
            )
            track.reported_peak = score
            return track.alert
        if track.cleared_ms is None and track.below >= policy.close_after:
            track.cleared_ms = p.window_end_ms
            track.quiet_ms = 0
        elif track.cleared_ms is not None and track.above >= policy.open_after:
            track.cleared_ms = None  # alarming again within the quiet period: same incident
        elif track.cleared_ms is not None:
            track.quiet_ms += elapsed
        if track.cleared_ms is not None and track.quiet_ms >= policy.quiet_ms:
            closed = replace(
                alert,
                closed_ms=p.window_end_ms,
                last_score=score,
                last_update_ms=p.window_end_ms,
                rul_cycles=p.rul_cycles,
            )
            track.alert = None
            track.reported_peak = 0.0
            track.cleared_ms = None
            return closed
        escalated = severity is Severity.CRITICAL and alert.severity is not Severity.CRITICAL
        # A worsening machine is news (stored, published) each time its peak grows by a
        # step; every window would flood the records and the broker with repeats.
        worse = score >= (track.reported_peak or alert.peak_score) * PEAK_STEP
        track.alert = replace(
            alert,
            severity=Severity.CRITICAL if escalated else alert.severity,
            peak_score=max(alert.peak_score, score),
            last_score=score,
            rul_cycles=p.rul_cycles,
            last_update_ms=p.window_end_ms,
        )
        if escalated or worse:
            track.reported_peak = track.alert.peak_score
            return track.alert
        return None
