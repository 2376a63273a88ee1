from __future__ import annotations

from pathlib import Path

import pytest

from agent.runtime import resolve_bundle
from agent.settings import Settings
from models.bundles import default_bundle_path


def settings(bundle: str | None) -> Settings:
    return Settings.model_validate({"model": {} if bundle is None else {"bundle": bundle}})


def test_a_shipped_bundle_is_named_or_given_by_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_bundle(settings(None)) == default_bundle_path("pump")
    assert resolve_bundle(settings("cmapss-fd001")) == default_bundle_path("cmapss-fd001")
    # A directory of that name where the agent runs is the operator's: it wins.
    (tmp_path / "cmapss-fd001").mkdir()
    assert resolve_bundle(settings("cmapss-fd001")) == Path("cmapss-fd001")
    assert resolve_bundle(settings("/srv/b")) == Path("/srv/b")
