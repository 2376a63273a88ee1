"""Session-wide fixtures: a real Mosquitto broker, fresh migrated databases, the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from agent.storage import migrate
from tests.support import Broker, run_cli, running_broker


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One real Mosquitto for the whole session on a free 127.0.0.1 port."""
    with running_broker(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the test's own, for tests that stop and restart it."""
    with running_broker(tmp_path) as broker:
        yield broker


@pytest.fixture
def migrated_db(tmp_path: Path) -> Path:
    """A fresh SQLite file migrated to the newest schema."""
    path = tmp_path / "data" / "edgewatch.db"
    migrate.upgrade(path)
    return path


CliRunner = Callable[..., CompletedProcess[str]]


@pytest.fixture
def cli(tmp_path: Path) -> CliRunner:
    """Run the real ``edgewatch`` in a subprocess, in the test's temporary directory."""

    def runner(*args: str, **kwargs: object) -> CompletedProcess[str]:
        kwargs.setdefault("cwd", tmp_path)
        return run_cli(*args, **kwargs)  # type: ignore[arg-type]

    return runner
