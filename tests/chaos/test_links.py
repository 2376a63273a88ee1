"""The links fail: Mosquitto restarted mid-stream, the uplink cut mid-upload."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.sync.conftest import S3Server
from tests.chaos.conftest import make_agent, s3_section
from tests.chaos.support import (
    PersistentBroker,
    Publishing,
    Report,
    Row,
    Scale,
    TcpProxy,
    account,
    account_objects,
    count,
    crashed_lines,
    integrity,
    mixed_load,
    reached,
)
from tests.e2e.harness import scalar, wait_until
from tests.support import Broker, free_port

pytestmark = pytest.mark.chaos

WAIT_S = 180.0


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[PersistentBroker]:
    broker = PersistentBroker(tmp_path / "mosquitto", port=free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_mosquitto_restarted_mid_stream_loses_nothing(
    tmp_path: Path, persistent_broker: PersistentBroker, scale: Scale, report: Report
) -> None:
    broker = persistent_broker
    load = mixed_load(600 * (scale.broker_restarts + 1), prefix="m")
    agent = make_agent(tmp_path, broker.port, storage={"commit_interval_ms": 50})
    db = tmp_path / "data" / "edgewatch.db"
    total = len(load.messages)
    rng = random.Random(20)

    def stored() -> int:
        return count(db, "readings") + count(db, "dead_letters")

    agent.start()
    publisher = Publishing(
        broker.host, broker.port, load.messages, rate_msg_s=total / (scale.broker_restarts * 2.0)
    )
    step = total // (scale.broker_restarts + 1)
    crashes: list[str] = []
    for restart in range(scale.broker_restarts):
        target = min(total, stored() + rng.randint(step // 2, step))
        wait_until(reached(stored, target), WAIT_S, f"progress before restart {restart}")
        # Stopped (it saves its sessions and queues) and started on the same port: every
        # connection drops; the agent and the publisher reconnect on their own.
        broker.stop()
        broker.start()  # the next wait for progress is also the wait for the reconnection
    publisher.join(WAIT_S)
    expected = len(load.good) + sum(load.bad.values())
    wait_until(lambda: stored() >= expected, WAIT_S, "every message after the restarts")
    assert agent.process is not None
    if agent.process.poll() is not None:
        crashes.append(f"exited by itself with {agent.process.returncode}")
    crashes += crashed_lines(agent)
    assert agent.stop() == 0
    messages = account(db, load)
    check = integrity(db)
    report.add(
        Row(
            "Mosquitto restarted mid-stream",
            scale.broker_restarts,
            total,
            messages.lost,
            messages.duplicated,
            len(crashes),
            check,
            notes="persistent session, QoS 1, Mosquitto persistence on",
        )
    )
    assert messages.lost == 0 and messages.duplicated == 0, messages.detail
    assert not crashes, crashes
    assert check == "ok"


def test_uplink_cut_mid_upload_delivers_every_object_once(
    tmp_path: Path, mqtt_broker: Broker, s3: S3Server, scale: Scale, report: Report
) -> None:
    bucket = s3.new_bucket()
    proxy = TcpProxy(s3.port)
    # 12 assets x 16 hours of a reading every 2 minutes: about 5,800 summaries of 1
    # minute waiting (short scale: 2 hours), drained at a capped rate (about 120 objects
    # a second) so that every cut lands mid-upload.
    hours = 16 if scale.name != "short" else 2
    per_asset = hours * 30
    load = mixed_load(12 * per_asset, assets=12, bad_every=0, period_s=120, prefix="u")
    agent = make_agent(
        tmp_path,
        mqtt_broker.port,
        sync=s3_section(
            f"http://127.0.0.1:{proxy.port}",
            bucket,
            concurrency=4,
            retraining=False,
            bandwidth_bytes_per_s=100_000,
        ),
    )
    db = tmp_path / "data" / "edgewatch.db"
    rng = random.Random(3)

    def uploaded() -> int:
        return int(scalar(db, "select count(*) from outbox where state = 'done'") or 0)

    def pending() -> int:
        return int(scalar(db, "select count(*) from outbox where state != 'done'") or 0)

    crashes: list[str] = []
    try:
        agent.start()
        publisher = Publishing(mqtt_broker.host, mqtt_broker.port, load.messages)
        publisher.join(WAIT_S)
        wait_until(lambda: count(db, "readings") >= len(load.good), WAIT_S, "every reading stored")
        wait_until(lambda: pending() > 100, WAIT_S, "a backlog of summaries")
        for cut in range(scale.uplink_cuts):
            target = uploaded() + rng.randint(5, 40)
            wait_until(reached(uploaded, target), WAIT_S, f"uploads before cut {cut}")
            assert pending() > 0, "the backlog drained before the cut: make it longer"
            refused = reached(lambda: proxy.refused, proxy.refused + 1)
            proxy.cut()
            # The uploader meets the cut (its next connection is refused), then the
            # uplink comes back; the next wait for uploads is the wait for the recovery.
            wait_until(refused, WAIT_S, f"the uploader to meet cut {cut}")
            proxy.restore()
        wait_until(lambda: pending() == 0, WAIT_S, "the backlog to drain")
        assert agent.process is not None
        if agent.process.poll() is not None:
            crashes.append(f"exited by itself with {agent.process.returncode}")
        crashes += crashed_lines(agent)
        assert agent.stop() == 0
    finally:
        proxy.close()
    messages = account(db, load)
    objects = account_objects(db, s3.client(), bucket)
    check = integrity(db)
    report.add(
        Row(
            "uplink cut mid-upload",
            scale.uplink_cuts,
            objects.objects,
            objects.lost + messages.lost,
            objects.duplicated + messages.duplicated,
            len(crashes),
            check,
            notes=f"{objects.objects:,} objects through a TCP proxy cut {proxy.cuts} times",
        )
    )
    assert objects.lost == 0 and objects.duplicated == 0, objects.detail
    assert messages.lost == 0 and messages.duplicated == 0, messages.detail
    assert not crashes, crashes
    assert check == "ok"
