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
        "other/plant1/pump-7/telemetry",
        "edgewatch/plant2/bad\nname/telemetry",  # the site is checked before the name
        "",
    ],
)
def test_other_topics_are_unknown_topic(topic: str) -> None:
    with pytest.raises(PayloadError) as caught:
        TopicMatcher(TEMPLATE, "plant1").asset_of(topic)
    assert caught.value.reason == RejectReason.UNKNOWN_TOPIC


@pytest.mark.parametrize(
    ("asset", "why"),
    [
        ("", "is empty"),
        ("p" * 129, "is 129 characters long (at most 128)"),
        ("pump\n2025-01-01 ERROR forged", "contains the control character '\\n'"),
        ("pump\r1", "control character"),
        ("pump\x1b[2J", "control character"),
        ("pump\x00", "control character"),
        ("pump\u202e1", "control character"),  # right-to-left override
        ("pump\u20281", "control character"),  # line separator
        (" pump-1", "leading or trailing whitespace"),
        ("pump-1\t", "leading or trailing whitespace"),
        ("pump+1", "'+'"),
        ("pump#1", "'#'"),
        ("..", "relative path"),
    ],
)
def test_bad_asset_names_are_refused_with_their_reason(asset: str, why: str) -> None:
    matcher = TopicMatcher("factory/{site}/{asset}", "s1")
    with pytest.raises(PayloadError) as caught:
        matcher.asset_of(f"factory/s1/{asset}")
    assert caught.value.reason == RejectReason.BAD_ASSET_NAME
    assert why in caught.value.detail
    assert "\n" not in caught.value.detail and len(caught.value.detail) < 200
    # Refusals are not cached as names: asking again refuses again.
    with pytest.raises(PayloadError):
        matcher.asset_of(f"factory/s1/{asset}")


@pytest.mark.parametrize(
    "asset", ["p" * 128, "Pumpe Halle 3", "pompe-ré-7", "泵-1", "pump.1", "a b", "x$y"]
)
def test_good_asset_names_pass(asset: str) -> None:
    assert TopicMatcher(TEMPLATE, "s").asset_of(f"edgewatch/s/{asset}/telemetry") == asset


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
