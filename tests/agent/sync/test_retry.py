"""Quarantined items in `sync status` and `status`, and `sync retry` putting them back in
line once the target is fixed, all through the real CLI and a file target."""

from __future__ import annotations

import json
from pathlib import Path

from agent import outbox
from agent.sqlite import open_engine
from tests.agent.sync.conftest import AGENT, SITE
from tests.conftest import CliRunner

T0 = 1_763_900_000_000  # 2025-11-23
DAY_MS = 86_400_000
REFUSED_DAY = f"{SITE}/{AGENT}/summary/2025/11/23"


def _seed(db: Path) -> tuple[list[str], list[str]]:
    """Three summaries of the day the target cannot store, two of the next day."""
    engine = open_engine(db, create=False)
    refused: list[str] = []
    fine: list[str] = []
    try:
        with engine.begin() as conn:
            for i, (day, keys) in enumerate([(0, refused)] * 3 + [(1, fine)] * 2):
                keys.append(
                    outbox.enqueue_json(
                        conn,
                        site=SITE,
                        agent=AGENT,
                        kind=outbox.SUMMARY,
                        ts_ms=T0 + day * DAY_MS,
                        asset=f"pump-{i}",
                        name="summary.json",
                        obj={"i": i},
                    )
                )
    finally:
        engine.dispose()
    return refused, fine


def test_refused_items_are_shown_and_retried_once_the_target_is_fixed(
    cli: CliRunner, migrated_db: Path, tmp_path: Path
) -> None:
    cloud = tmp_path / "cloud"
    env = {
        "EDGEWATCH_STORAGE__DATA_DIR": str(migrated_db.parent),
        "EDGEWATCH_IDENTITY__SITE": SITE,
        "EDGEWATCH_IDENTITY__AGENT": AGENT,
        "EDGEWATCH_SYNC__TARGET": cloud.as_uri(),
        "EDGEWATCH_SYNC__RETRAINING": "false",
        "COLUMNS": "400",  # whole keys and errors on one table line
    }
    refused, fine = _seed(migrated_db)
    # A file where the day's folder belongs: every object of that day is refused for
    # good (ENOTDIR) until someone removes it.
    blocker = cloud / REFUSED_DAY
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")

    def drain() -> dict[str, object]:
        result = cli("sync", "now", "--json", "--no-progress", env=env)
        assert result.returncode == 0, result.stderr
        report: dict[str, object] = json.loads(result.stdout)
        return report

    first = drain()
    assert (first["uploaded"], first["quarantined"]) == (2, 3)
    again = cli("sync", "now", "--no-progress", env=env)
    assert again.returncode == 0, again.stderr
    assert "uploaded 0 items" in again.stdout and "refused" not in again.stdout  # set aside

    shown = cli("sync", "status", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "quarantined: 3 items the target refused for good" in shown.stdout
    assert "sync retry --all" in shown.stdout
    for key in refused:
        line = next(line for line in shown.stdout.splitlines() if key in line)
        assert "Not a directory" in line and "summary" in line
    for key in fine:
        assert key not in shown.stdout

    agent_status = cli("status", env=env)
    assert agent_status.returncode == 1  # no agent running; the table is printed anyway
    assert "sync quarantined" in agent_status.stdout
    assert all(key in agent_status.stdout for key in refused)
    doc = json.loads(cli("status", "--json", env=env).stdout)
    assert doc["sync_quarantined"] == 3
    assert {item["key"] for item in doc["sync_quarantined_newest"]} == set(refused)

    # A key that is not quarantined (uploaded, or none at all) is named and fails the
    # command; the one that is goes back in line, and is refused again while the
    # target is still broken.
    one = cli("sync", "retry", refused[0], fine[0], "no/such/key", "--json", env=env)
    assert one.returncode == 1
    assert json.loads(one.stdout) == {
        "requeued": [refused[0]],
        "not_quarantined": sorted([fine[0], "no/such/key"]),
    }
    assert "not quarantined:" in one.stderr and "no/such/key" in one.stderr
    retried_one = cli("sync", "now", "--no-progress", env=env)
    assert "; 1 item refused for good, set aside" in retried_one.stdout

    blocker.unlink()
    retried = cli("sync", "retry", "--all", env=env)
    assert retried.returncode == 0, retried.stderr
    assert "3 items back in line for upload" in retried.stdout
    last = drain()
    assert (last["uploaded"], last["quarantined"], last["remaining"]) == (3, 0, 0)
    stored = {p.relative_to(cloud).as_posix() for p in cloud.rglob("*.json")}
    assert stored == {*refused, *fine}

    after = cli("sync", "status", env=env)
    assert "quarantined: none" in after.stdout
    assert json.loads(cli("sync", "status", "--json", env=env).stdout)["quarantined_items"] == 0
    nothing = cli("sync", "retry", "--all", "--json", env=env)
    assert nothing.returncode == 0
    assert json.loads(nothing.stdout) == {"requeued": [], "not_quarantined": []}


def test_retry_needs_keys_or_all_but_not_both(cli: CliRunner, migrated_db: Path) -> None:
    env = {"EDGEWATCH_STORAGE__DATA_DIR": str(migrated_db.parent)}
    for args in ([], ["--all", "some/key"]):
        result = cli("sync", "retry", *args, env=env)
        assert result.returncode == 2
        assert "--all" in result.stderr
