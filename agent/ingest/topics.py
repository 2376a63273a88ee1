"""Topic templates: the subscription filter and the asset named by a topic."""

from __future__ import annotations

from typing import Final

from agent.domain import RejectReason, name_problem
from agent.errors import PayloadError

_SITE: Final = "{site}"
_ASSET: Final = "{asset}"
# Enough for every asset of a large plant; a flood of bogus topics only costs a
# cache reset, never unbounded memory.
_CACHE_MAX: Final = 4096
_DETAIL_TOPIC_CHARS: Final = 200
_DETAIL_NAME_CHARS: Final = 64


class TopicMatcher:
    """Matches incoming topics against a template such as ``edgewatch/{site}/{asset}/telemetry``.

    The subscription uses ``+`` for the site level too, so that a device configured
    for the wrong site is seen (and dead-lettered as ``unknown_topic``) instead of
    silently ignored.
    """

    __slots__ = ("_asset_level", "_cache", "_levels", "_site_level", "site", "template")

    def __init__(self, template: str, site: str) -> None:
        levels = template.split("/")
        for level in levels:
            if ("{" in level or "}" in level) and level not in (_SITE, _ASSET):
                raise ValueError(
                    f"topic template {template!r}: placeholders must fill a whole level "
                    "and only {site} and {asset} are known"
                )
        if levels.count(_SITE) != 1 or levels.count(_ASSET) != 1:
            raise ValueError(f"topic template {template!r} needs {{site}} and {{asset}} once")
        self.template = template
        self.site = site
        self._levels = tuple(levels)
        self._site_level = levels.index(_SITE)
        self._asset_level = levels.index(_ASSET)
        self._cache: dict[str, str] = {}

    @property
    def subscription(self) -> str:
        return "/".join("+" if level in (_SITE, _ASSET) else level for level in self._levels)

    def asset_of(self, topic: str) -> str:
        """The asset a topic names, or :class:`PayloadError` (``unknown_topic``)."""
        asset = self._cache.get(topic)
        if asset is not None:
            return asset
        asset = self._match(topic)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[topic] = asset
        return asset

    def _match(self, topic: str) -> str:
        parts = topic.split("/")
        if len(parts) != len(self._levels):
            raise _unknown(topic, "does not match the template")
        for index, (part, level) in enumerate(zip(parts, self._levels, strict=True)):
            if index == self._site_level:
                if part != self.site:
                    raise _unknown(topic, f"site {part[:64]!r} is not ours ({self.site!r})")
            elif index != self._asset_level and part != level:
                raise _unknown(topic, "does not match the template")
        asset = parts[self._asset_level]
        # The one place asset names enter: everything downstream (tables, logs,
        # reports, object keys) may take them as plain, bounded, single-line text.
        problem = name_problem(asset)
        if problem is not None:
            raise PayloadError(
                RejectReason.BAD_ASSET_NAME,
                f"asset name {asset[:_DETAIL_NAME_CHARS]!r} {problem}",
            )
        return asset


def _unknown(topic: str, why: str) -> PayloadError:
    return PayloadError(RejectReason.UNKNOWN_TOPIC, f"{topic[:_DETAIL_TOPIC_CHARS]!r} {why}")


def format_topic(template: str, **parts: str) -> str:
    """Fill a topic template; every placeholder must be given and be one topic level."""
    for name, value in parts.items():
        if not value or any(c in value for c in "/+#"):
            raise ValueError(f"{name}={value!r} is not a single topic level")
    try:
        return template.format_map(parts)
    except KeyError as exc:
        raise ValueError(f"topic template {template!r} needs {exc.args[0]}") from None
