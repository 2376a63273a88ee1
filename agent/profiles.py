"""Asset profiles: which settings govern an asset, and how it is modelled.

A profile is chosen by the first ``[[profiles]]`` glob that matches the asset's name
(the defaults of :class:`~agent.settings.ProfileSettings` when none does). Once the
asset's sensor set is known (listed in its profile, or learnt from its first
readings), :meth:`Profiles.plan` fixes its :class:`~agent.domain.AssetPlan`: the
model bundle's networks when the asset has every sensor of the bundle, an
autoencoder of its own otherwise. Ingest, windowing and inference all ask this one
module, so they agree on every asset.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from agent.domain import AssetPlan
from agent.settings import LEARN, ModelSettings, ProfileSettings
from models.preprocessing import learnt_sensor_order

#: Assets whose profile lookup is cached (a miss costs one glob match per profile).
PROFILE_CACHE_ASSETS = 4096
#: With no set in a majority after this many times ``learn_readings`` votes, the set
#: becomes the sensors present in a majority of the last votes.
LEARN_GIVE_UP_FACTOR = 5


@dataclass(frozen=True, slots=True)
class BundleShape:
    """What of the model bundle decides an asset's plan."""

    sensors: tuple[str, ...]
    has_rul: bool
    has_anomaly: bool
    #: Samples before a RUL-only bundle's first estimate (None: a whole window).
    min_rows: int | None = None


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """An asset's alert policy, overrides of its profile already applied (None: the
    model bundle's value)."""

    open_after: int | None
    close_after: int | None
    close_ratio: float | None
    incident_quiet_s: float
    anomaly_threshold: float | None


class Profiles:
    """The profiles of one agent, with a bounded per-asset lookup cache."""

    def __init__(self, profiles: Sequence[ProfileSettings], model: ModelSettings) -> None:
        self.profiles = tuple(profiles)
        self.model = model
        self.default = ProfileSettings.model_validate({})
        self.for_asset = lru_cache(maxsize=PROFILE_CACHE_ASSETS)(self._find)

    def _find(self, asset: str) -> ProfileSettings:
        for profile in self.profiles:
            if fnmatch.fnmatchcase(asset, profile.match):
                return profile
        return self.default

    def renames(self, asset: str) -> Mapping[str, str] | None:
        return self.for_asset(asset).rename or None

    def commission_samples(self, asset: str) -> int:
        return self.for_asset(asset).commission_samples or self.model.commission_samples

    def fixed_sensors(self, asset: str) -> tuple[str, ...] | None:
        """The sensors the profile lists, or None when they are learnt."""
        sensors = self.for_asset(asset).sensors
        return None if sensors == LEARN else tuple(sensors)

    def alerts(self, asset: str) -> AlertSettings:
        p = self.for_asset(asset)
        m = self.model
        return AlertSettings(
            open_after=p.alert_open_after or m.alert_open_after,
            close_after=p.alert_close_after or m.alert_close_after,
            close_ratio=p.alert_close_ratio or m.alert_close_ratio,
            incident_quiet_s=(
                p.incident_quiet_s if p.incident_quiet_s is not None else m.incident_quiet_s
            ),
            anomaly_threshold=p.anomaly_threshold or m.anomaly_threshold,
        )

    def plan(self, asset: str, sensors: Iterable[str], bundle: BundleShape) -> AssetPlan:
        """The plan of an asset with ``sensors`` (extras beyond a plan are ignored)."""
        profile = self.for_asset(asset)
        names = tuple(sensors)
        covers = set(bundle.sensors) <= set(names)
        rul = profile.rul and bundle.has_rul
        if profile.bundle == "auto" and covers and (bundle.has_anomaly or rul):
            return AssetPlan(bundle.sensors, from_bundle=True, rul=rul, baseline=bundle.has_anomaly)
        ordered = names if self.fixed_sensors(asset) is not None else learnt_sensor_order(names)
        run = profile.run_sensor if profile.run_sensor in ordered else None
        return AssetPlan(
            ordered,
            from_bundle=False,
            rul=False,
            baseline=True,
            run_sensor=run,
            run_min_fraction=profile.run_min_fraction,
        )

    def resumed_plan(
        self, asset: str, sensors: Sequence[str], from_bundle: bool, bundle: BundleShape
    ) -> AssetPlan:
        """The plan of an asset commissioned before a restart."""
        rul = from_bundle and self.for_asset(asset).rul and bundle.has_rul
        return AssetPlan(tuple(sensors), from_bundle=from_bundle, rul=rul, baseline=True)


def majority_set(votes: Sequence[frozenset[str]], needed: int) -> frozenset[str] | None:
    """The sensor set of a strict majority of the last ``needed`` votes, if any.

    Past :data:`LEARN_GIVE_UP_FACTOR` times ``needed`` votes without one (a device
    that alternates between sets), the sensors present in a majority of the last
    ``needed`` votes are taken instead, so that learning always ends.
    """
    if len(votes) < needed:
        return None
    recent = votes[-needed:]
    best, count = Counter(recent).most_common(1)[0]
    if count * 2 > needed and best:
        return best
    if len(votes) < LEARN_GIVE_UP_FACTOR * needed:
        return None
    present = Counter(name for vote in recent for name in vote)
    common = frozenset(name for name, n in present.items() if n * 2 > needed)
    return common or None
