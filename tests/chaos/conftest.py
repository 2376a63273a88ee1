"""Fixtures of the fault-injection suite: its scale, its report, an S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.sync.conftest import KEY, S3Server, start_moto
from tests.chaos.support import SITE, Report, Scale, current_scale
from tests.e2e.harness import AgentProcess, write_config
from tests.support import REPO, free_port

DOCS = REPO / "docs" / "reliability.md"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Beyond the short scale the suite is long: also "slow", so `-m "not slow"` skips it.
    if current_scale().name == "short":
        return
    for item in items:
        if item.get_closest_marker("chaos") is not None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def scale() -> Scale:
    return current_scale()


@pytest.fixture(scope="session")
def report(scale: Scale) -> Iterator[Report]:
    """Figures of every scenario; written to docs/reliability.md at medium or full scale."""
    figures = Report(scale)
    yield figures
    if scale.writes_docs and figures.rows:
        DOCS.write_text(figures.markdown())


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    port = free_port()
    server = start_moto(port)
    try:
        yield S3Server(f"http://127.0.0.1:{port}", port)
    finally:
        server.stop()


def s3_section(endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "target": f"s3://{bucket}/edge",
        "s3_endpoint_url": endpoint,
        "s3_region": "us-east-1",
        "s3_access_key_id": KEY,
        "s3_secret_access_key": KEY,
        "interval_s": 1.0,
        "backoff_max_s": 2.0,
        "summary_period_s": 60,
        **extra,
    }


def make_agent(
    tmp_path: Path, port: int, env: dict[str, str] | None = None, **sections: dict[str, Any]
) -> AgentProcess:
    """``edgewatch run`` that never commissions (no torch children: the suite is about
    ingest, storage and sync), on the test's data directory."""
    sections.setdefault("model", {})
    sections["model"] = {"commission_samples": 100_000, **sections["model"]}
    sections["identity"] = {"site": SITE, **sections.get("identity", {})}
    config = write_config(tmp_path / "edgewatch.toml", tmp_path / "data", port, **sections)
    return AgentProcess(config=config, cwd=tmp_path, env=env or {})
