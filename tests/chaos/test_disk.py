"""The disk: 24 hours offline with the disk budget reached; the data directory full."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.conftest import make_agent, s3_section
from tests.chaos.support import (
    Publishing,
    Report,
    Row,
    Scale,
    account,
    account_ledger,
    count,
    crashed_lines,
    files_bytes,
    integrity,
    mixed_load,
    publish_all,
    reached,
)
from tests.e2e.harness import AgentProcess, query, scalar, wait_until
from tests.support import Broker, free_port

pytestmark = pytest.mark.chaos

WAIT_S = 180.0
MB = 1024 * 1024
#: The smallest budget the settings accept.
BUDGET_MB = 16
#: The budget bounds the files within this (tests/agent/sync/test_hardening.py and
#: docs/sync.md, "Measured": usage after a pass is at most 105 % of the budget).
BUDGET_TOLERANCE = 1.05
#: Sensors per reading in the offline scenario: wide rows fill the budget sooner.
OFFLINE_WIDTH = 100
OFFLINE_ASSETS = 4
DROPPED = "disk budget reached: data dropped (see the loss ledger)"
CANNOT_WRITE = "cannot write to the database; holding messages unacknowledged"
RECOVERED = "database writes recovered"
TMPFS_MB = 8


def test_24_hours_offline_over_the_disk_budget_the_ledger_names_every_drop(
    tmp_path: Path, mqtt_broker: Broker, scale: Scale, report: Report
) -> None:
    # 24 hours of readings, ending an hour ago, from machines whose gateway has no
    # uplink (the S3 endpoint is a closed port) and a 16 MiB budget.
    bad_every = 10
    good_per_asset = scale.offline_messages * (bad_every - 1) // bad_every // OFFLINE_ASSETS
    period_s = scale.offline_hours * 3600 // good_per_asset
    load = mixed_load(
        scale.offline_messages,
        assets=OFFLINE_ASSETS,
        bad_every=bad_every,
        period_s=period_s,
        width=OFFLINE_WIDTH,
        prefix="o",
    )
    stamps = [ts for _, ts in load.good]
    assert max(stamps) - min(stamps) >= (scale.offline_hours - 1) * 3_600_000
    closed_port = free_port()
    agent = make_agent(
        tmp_path,
        mqtt_broker.port,
        sync=s3_section(f"http://127.0.0.1:{closed_port}", "offline", summary_period_s=600),
        storage={"disk_budget_mb": BUDGET_MB, "commit_interval_ms": 50},
    )
    data = tmp_path / "data"
    db = data / "edgewatch.db"
    expected = len(load.good) + sum(load.bad.values())
    last_ts = max(stamps)

    def ledgered(kind: str) -> int:
        return int(
            scalar(db, "select coalesce(sum(items), 0) from loss_ledger where kind = ?", kind) or 0
        )

    def accounted() -> int:
        return (
            count(db, "readings")
            + ledgered("readings")
            + count(db, "dead_letters")
            + ledgered("dead_letters")
        )

    def summarised() -> bool:
        rows = query(db, "select value_json from sync_state where key like 'summary_cursor:600:%'")
        return len(rows) == OFFLINE_ASSETS and min(int(v) for (v,) in rows) > last_ts

    def within_budget() -> bool:
        return files_bytes(data, db) <= BUDGET_MB * MB * BUDGET_TOLERANCE

    crashes: list[str] = []
    agent.start()
    t0 = time.monotonic()
    # As fast as the publisher goes, QoS 1: the agent stores them as they come (and,
    # beyond the short scale, its budget duty drops the oldest while they come).
    publish_all(mqtt_broker.host, mqtt_broker.port, load.messages, reconnect_timeout_s=WAIT_S)
    wait_until(reached(accounted, expected), WAIT_S, "every message stored or ledgered")
    wait_until(summarised, WAIT_S, "every period summarised")
    ingest_s = time.monotonic() - t0
    peak = files_bytes(data, db)
    if scale.name == "short":
        # The duty runs at start and every 60 s: the short version restarts the agent,
        # as a user would, instead of waiting for the next pass.
        assert peak > BUDGET_MB * MB, f"only {peak / MB:.1f} MiB: make the load larger"
        crashes += crashed_lines(agent)
        assert agent.stop() == 0
        agent.start()
    wait_until(lambda: agent.saw(DROPPED), WAIT_S, "the budget duty to drop")
    wait_until(within_budget, WAIT_S, "the budget duty to bring the files within the budget")
    assert agent.process is not None
    if agent.process.poll() is not None:
        crashes.append(f"exited by itself with {agent.process.returncode}")
    crashes += crashed_lines(agent)
    assert agent.stop() == 0

    used = files_bytes(data, db)
    ledger = account_ledger(db, load)
    check = integrity(db)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(ledger.entries.items()))
    report.add(
        Row(
            "24 h offline, disk budget reached",
            1,
            len(load.messages),
            ledger.lost,
            ledger.duplicated,
            len(crashes),
            check,
            notes=(
                f"{scale.offline_hours} h of {OFFLINE_ASSETS} assets x {OFFLINE_WIDTH} sensors "
                f"stored in {ingest_s:.0f} s, peak {peak / MB:.1f} MiB; dropped "
                f"{ledger.readings_dropped:,} readings and {ledger.letters_dropped:,} dead "
                f"letters, each named by the ledger (entries: {kinds}); files "
                f"{used / MB:.1f} MiB of the {BUDGET_MB} MiB budget"
            ),
        )
    )
    assert ledger.lost == 0 and ledger.duplicated == 0, ledger.detail
    assert ledger.readings_dropped > 0, "the budget was never reached"
    assert used <= BUDGET_MB * MB * BUDGET_TOLERANCE, used
    assert not crashes, crashes
    assert check == "ok"


# -- disk full -------------------------------------------------------------------------


@pytest.fixture
def tmpfs_data_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/data on a small tmpfs of its own (skipped where mounting is not allowed)."""
    data = tmp_path / "data"
    data.mkdir()
    if os.geteuid() != 0:
        pytest.skip("the disk-full scenario mounts a tmpfs as data_dir: it needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs as data_dir: {done.stderr.strip()}")
    try:
        yield data
    finally:
        if subprocess.run(["umount", str(data)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(data)], check=False)


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; returns its size."""
    written = 0
    with path.open("wb", buffering=0) as out:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += out.write(block) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


def logged(agent: AgentProcess, event: str) -> int:
    with agent._lock:
        return sum(1 for e in agent.events if e.get("event") == event)


def test_disk_full_holds_messages_unacknowledged_and_resumes_when_space_returns(
    tmp_path: Path, tmpfs_data_dir: Path, mqtt_broker: Broker, scale: Scale, report: Report
) -> None:
    load = mixed_load(scale.disk_full_messages, prefix="f")
    third = len(load.messages) // 3
    before, during, after = (
        load.messages[:third],
        load.messages[third : 2 * third],
        load.messages[2 * third :],
    )
    agent = make_agent(tmp_path, mqtt_broker.port, storage={"commit_interval_ms": 50})
    db = tmpfs_data_dir / "edgewatch.db"
    filler = tmpfs_data_dir / "filler"
    expected = len(load.good) + sum(load.bad.values())

    def stored() -> int:
        return count(db, "readings") + count(db, "dead_letters")

    crashes: list[str] = []
    agent.start()
    try:
        publish_all(mqtt_broker.host, mqtt_broker.port, before)
        wait_until(reached(stored, len(before)), WAIT_S, "the messages before the disk fills")
        committed = stored()
        filled = fill(filler)
        # Messages keep coming; the first write that needs a new page fails.
        publisher = Publishing(
            mqtt_broker.host, mqtt_broker.port, during, rate_msg_s=len(during) / 5.0
        )
        wait_until(lambda: agent.saw(CANNOT_WRITE), WAIT_S, "the agent to meet the full disk")
        publisher.join(WAIT_S)
        # More while the disk is still full: the broker keeps them, the agent holds them.
        held_from = stored()
        publish_all(mqtt_broker.host, mqtt_broker.port, after)
        assert agent.process is not None and agent.process.poll() is None, "the agent died"
        assert not agent.saw(RECOVERED)
        assert stored() == held_from, "rows were written to a full disk"
        filler.unlink()
        wait_until(lambda: agent.saw(RECOVERED), WAIT_S, "the agent to write again")
        wait_until(reached(stored, expected), WAIT_S, "every held message stored")
        if agent.process.poll() is not None:
            crashes.append(f"exited by itself with {agent.process.returncode}")
        crashes += crashed_lines(agent)
        failures = logged(agent, CANNOT_WRITE)
        recoveries = logged(agent, RECOVERED)
        with agent._lock:
            errors = [
                json.dumps(e)[:300]
                for e in agent.events
                if e.get("level") in ("error", "critical") and e.get("event") != CANNOT_WRITE
            ]
    finally:
        if agent.process is not None and agent.process.poll() is None:
            assert agent.stop() == 0
    messages = account(db, load)
    check = integrity(db)
    report.add(
        Row(
            "disk full (tmpfs data_dir)",
            1,
            len(load.messages),
            messages.lost,
            messages.duplicated,
            len(crashes),
            check,
            notes=(
                f"{committed:,} stored before a {filled / MB:.1f} MiB filler filled the "
                f"{TMPFS_MB} MiB tmpfs, {expected - held_from:,} held unacknowledged while "
                f"full and stored once it was deleted; logged {failures} failure, "
                f"{recoveries} recovery"
            ),
        )
    )
    assert messages.lost == 0 and messages.duplicated == 0, messages.detail
    assert failures == 1 and recoveries == 1, (failures, recoveries)
    assert not errors, errors
    assert not crashes, crashes
    assert check == "ok"
