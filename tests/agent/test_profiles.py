"""Asset profiles decide each asset's plan."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.profiles import BundleShape, Profiles
from agent.settings import ModelSettings, ProfileSettings

PUMP = BundleShape(("flow", "speed"), has_rul=True, has_anomaly=True)


def _profiles(*tables: dict[str, object]) -> Profiles:
    return Profiles(
        [ProfileSettings.model_validate(t) for t in tables], ModelSettings.model_validate({})
    )


def test_an_own_models_run_sensor_comes_from_its_profile() -> None:
    profiles = _profiles(
        {"match": "comp-*", "run_sensor": "current_a", "run_min_fraction": 0.3},
        {"match": "fan-*", "run_sensor": "rpm"},
    )
    plan = profiles.plan("comp-1", ["vib_g", "current_a"], PUMP)
    assert (plan.from_bundle, plan.run_sensor, plan.run_min_fraction) == (False, "current_a", 0.3)
    # A run sensor the machine does not have judges nothing out.
    assert profiles.plan("fan-1", ["vib_g"], PUMP).run_sensor is None
    # Assets the bundle covers keep the bundle's own run condition.
    assert profiles.plan("comp-2", ["flow", "speed", "current_a"], PUMP).run_sensor is None


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_run_min_fraction_is_a_share(fraction: float) -> None:
    with pytest.raises(ValidationError, match="run_min_fraction"):
        ProfileSettings.model_validate({"run_sensor": "a", "run_min_fraction": fraction})
