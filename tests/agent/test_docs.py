"""Docs that are generated from code must match the code."""

from __future__ import annotations

from agent.settings import reference_markdown
from tests.support import REPO


def test_configuration_reference_is_current() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed.strip() == reference_markdown().strip(), (
        "docs/configuration.md is stale: run `edgewatch config reference > docs/configuration.md`"
    )
