"""kill -9 of the agent at random points under mixed QoS 1 load while it syncs to S3."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.agent.sync.conftest import S3Server
from tests.chaos.conftest import make_agent, s3_section
from tests.chaos.support import (
    Publishing,
    Report,
    Row,
    Scale,
    account,
    account_objects,
    count,
    crashed_lines,
    integrity,
    mixed_load,
    reached,
)
from tests.conftest import CliRunner
from tests.e2e.harness import scalar, wait_until
from tests.support import Broker

pytestmark = pytest.mark.chaos

WAIT_S = 180.0


def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    tmp_path: Path,
    mqtt_broker: Broker,
    s3: S3Server,
    cli: CliRunner,
    scale: Scale,
    report: Report,
) -> None:
    bucket = s3.new_bucket()
    load = mixed_load(scale.kill_messages)
    agent = make_agent(
        tmp_path,
        mqtt_broker.port,
        sync=s3_section(s3.endpoint, bucket, concurrency=4),
        storage={"commit_interval_ms": 50},
    )
    db = tmp_path / "data" / "edgewatch.db"
    rng = random.Random(1616)
    total = len(load.messages)

    def stored() -> int:
        return count(db, "readings") + count(db, "dead_letters")

    def uploaded() -> int:
        return int(scalar(db, "select count(*) from outbox where state = 'done'") or 0)

    def pending() -> int:
        return int(scalar(db, "select count(*) from outbox where state != 'done'") or 0)

    agent.start()
    # Paced so that the load spans the kills (about 1.5 s of life each).
    publisher = Publishing(
        mqtt_broker.host, mqtt_broker.port, load.messages, rate_msg_s=total / (scale.kills * 1.5)
    )
    crashes: list[str] = []
    step = max(2, total // (scale.kills + 1))
    for kill in range(scale.kills):
        point = rng.random()
        if point < 0.15:
            pass  # right after subscribing: recovery, migrations and the first commits
        elif point < 0.65:
            target = min(total, stored() + rng.randint(1, step))
            wait_until(reached(stored, target), WAIT_S, f"stored messages before kill {kill}")
        else:
            more = reached(uploaded, uploaded() + rng.randint(1, 25))
            wait_until(
                lambda: more() or (pending() == 0 and not publisher.alive()),  # noqa: B023
                WAIT_S,
                f"uploads before kill {kill}",
            )
        assert agent.process is not None
        if agent.process.poll() is not None:
            crashes.append(f"exited by itself with {agent.process.returncode}")
        crashes += crashed_lines(agent)
        agent.kill()
        agent.start()
    publisher.join(WAIT_S)
    expected = len(load.good) + sum(load.bad.values())
    wait_until(lambda: stored() >= expected, WAIT_S, "every message after the kills")
    crashes += crashed_lines(agent)
    assert agent.stop() == 0
    # What the last life left to upload (its shutdown event, the newest summaries).
    done = cli("--config", str(agent.config), "sync", "now", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr

    messages = account(db, load)
    objects = account_objects(db, s3.client(), bucket)
    check = integrity(db)
    ledger = count(db, "loss_ledger")
    report.add(
        Row(
            "kill -9 under load, sync to S3",
            scale.kills,
            total,
            messages.lost + objects.lost,
            messages.duplicated + objects.duplicated,
            len(crashes),
            check,
            notes=f"{objects.objects:,} objects in the bucket, loss ledger {ledger} rows",
        )
    )
    assert messages.lost == 0 and messages.duplicated == 0, messages.detail
    assert objects.lost == 0 and objects.duplicated == 0, objects.detail
    assert objects.objects > 0
    assert ledger == 0
    assert not crashes, crashes
    assert check == "ok"
