"""Training profiles: which networks ``edgewatch fleet retrain --profile NAME`` trains.

A profile names the shipped bundle whose sensors, window, threshold rule and run
condition the fleet model keeps (so that every gateway running that bundle can take the
new one), and the recipe of its fleet autoencoder. The RUL head of the base bundle is
carried over unchanged: retraining files hold no run-to-failure truth to learn RUL from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from agent.errors import ModelError
from models.retrain_shipped import (
    PUMP_ANOMALY,
    PUMP_RULE,
    PUMP_RUN_CONDITION,
    PUMP_SAMPLE_PERIOD_S,
)
from models.scoring import RunCondition, ThresholdRule
from models.train import AnomalyTrainConfig


@dataclass(frozen=True)
class FleetProfile:
    name: str
    #: Shipped bundle (``models.bundles``) the fleet model replaces.
    base_bundle: str
    anomaly: AnomalyTrainConfig
    rule: ThresholdRule
    run_condition: RunCondition | None
    sample_period_s: float
    #: Share of assets held out for early stopping, calibration and evaluation.
    val_fraction: float = 0.3
    #: Start from the base bundle's fleet autoencoder (what it learnt from its own
    #: fleet stays; the gateways' data adds operating points and labelled false
    #: alarms) at ``fine_tune_lr``, instead of a seeded fresh network.
    from_base: bool = True
    fine_tune_lr: float = 5e-4

    def with_options(
        self, *, seed: int, epochs: int | None, from_base: bool | None = None
    ) -> FleetProfile:
        anomaly = replace(self.anomaly, seed=seed, epochs=epochs or self.anomaly.epochs)
        chosen = self.from_base if from_base is None else from_base
        return replace(self, anomaly=anomaly, from_base=chosen)

    @property
    def learning_rate(self) -> float:
        return self.fine_tune_lr if self.from_base else self.anomaly.learning_rate


PROFILES: dict[str, FleetProfile] = {
    # The shipped pump bundle's recipe (models/retrain_shipped.py) on the gateways' data.
    "pump": FleetProfile(
        "pump", "pump", PUMP_ANOMALY, PUMP_RULE, PUMP_RUN_CONDITION, PUMP_SAMPLE_PERIOD_S
    ),
}


def profile(name: str) -> FleetProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ModelError(
            f"no fleet training profile named {name!r}",
            hint=f"known profiles: {', '.join(sorted(PROFILES))}",
        ) from None
