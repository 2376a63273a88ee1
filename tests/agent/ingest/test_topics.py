from __future__ import annotations

import pytest

from agent.domain import RejectReason
from agent.errors import PayloadError
from agent.ingest.topics import TopicMatcher, format_topic

TEMPLATE = "edgewatch/{site}/{asset}/telemetry"


def test_subscription_uses_wildcards_for_site_and_asset() -> None:
    assert TopicMatcher(TEMPLATE, "plant1").subscription == "edgewatch/+/+/telemetry"


def test_asset_of_a_matching_topic() -> None:
    matcher = TopicMatcher(TEMPLATE, "plant1")
    assert matcher.asset_of("edgewatch/plant1/pump-7/telemetry") == "pump-7"
    assert matcher.asset_of("edgewatch/plant1/pump-7/telemetry") == "pump-7"  # cached


@pytest.mark.parametrize(
    "topic",
    [
        "edgewatch/plant2/pump-7/telemetry",  # another site
        "edgewatch/plant1/pump-7/alerts",
        "edgewatch/plant1/pump-7/telemetry/extra",
        "edgewatch/plant1/telemetry",
        "edgewatch/plant1//telemetry",
        "other/plant1/pump-7/telemetry",
        "",
    ],
)
def test_other_topics_are_unknown_topic(topic: str) -> None:
    with pytest.raises(PayloadError) as caught:
        TopicMatcher(TEMPLATE, "plant1").asset_of(topic)
    assert caught.value.reason == RejectReason.UNKNOWN_TOPIC


def test_template_with_levels_in_another_order() -> None:
    matcher = TopicMatcher("factory/{asset}/data/{site}", "s1")
    assert matcher.subscription == "factory/+/data/+"
    assert matcher.asset_of("factory/fan-1/data/s1") == "fan-1"


@pytest.mark.parametrize(
    "template", ["a/{site}-x/{asset}", "a/{site}/{asset}/{other}", "a/{asset}"]
)
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(ValueError, match="template"):
        TopicMatcher(template, "s")


def test_format_topic() -> None:
    assert format_topic(TEMPLATE, site="s", asset="a") == "edgewatch/s/a/telemetry"
    with pytest.raises(ValueError, match="needs"):
        format_topic(TEMPLATE, site="s")
    with pytest.raises(ValueError, match="single topic level"):
        format_topic(TEMPLATE, site="s", asset="a/b")
