"""`edgewatch status` exit codes for a running, a stale and an unhealthy agent."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.settings import Settings
from agent.sqlite import open_engine
from agent.storage import queries
from agent.storage.writer import Heartbeat, Writer
from tests.conftest import CliRunner


def beat(db: Path, *, age_s: float, connected: bool) -> None:
    engine = open_engine(db)
    now_ms = time.time_ns() // 1_000_000
    health: dict[str, object] = {
        "broker_connected": connected,
        "uptime_s": 10.0,
        "messages_received": 50,
    }
    Writer(engine, site="s", outbox_enabled=False).write(
        [Heartbeat("gw", 123, "0.1.0", now_ms - 60_000, now_ms - int(age_s * 1000), health)],
        now_ms,
    )
    engine.dispose()


@pytest.mark.parametrize(
    ("age_s", "connected", "code", "running"),
    [(1.0, True, 0, True), (1.0, False, 3, True), (600.0, True, 1, False)],
)
def test_status_exit_codes(
    cli: CliRunner,
    migrated_db: Path,
    age_s: float,
    connected: bool,
    code: int,
    running: bool,
) -> None:
    beat(migrated_db, age_s=age_s, connected=connected)
    env = {
        "EDGEWATCH_STORAGE__DATABASE": str(migrated_db),
        "EDGEWATCH_STORAGE__DATA_DIR": str(migrated_db.parent),
        "EDGEWATCH_IDENTITY__AGENT": "gw",
        "EDGEWATCH_IDENTITY__SITE": "s",
    }
    result = cli("status", "--json", env=env)
    assert result.returncode == code, result.stderr
    doc = json.loads(result.stdout)
    assert doc["running"] is running
    assert doc["healthy"] is (code == 0)
    assert doc["messages_per_s_avg"] == 5.0


def test_status_without_database_is_one_line(cli: CliRunner, tmp_path: Path) -> None:
    result = cli("status", env={"EDGEWATCH_STORAGE__DATA_DIR": str(tmp_path / "none")})
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "does not exist" in result.stderr


def test_a_heartbeat_waiting_for_its_commit_does_not_make_the_agent_look_down() -> None:
    # At low rates a write batch waits up to storage.commit_max_wait_ms, heartbeats
    # included: the newest one in the database can be that much older.
    quiet = Settings.model_validate({"mqtt": {"health_interval_s": 2.0}})
    assert queries.heartbeat_max_age_ms(quiet) == 3 * 2_000 + quiet.storage.commit_max_wait_ms
    eager = Settings.model_validate(
        {"mqtt": {"health_interval_s": 2.0}, "storage": {"commit_max_wait_ms": 200}}
    )
    assert queries.heartbeat_max_age_ms(eager) == 6_200
