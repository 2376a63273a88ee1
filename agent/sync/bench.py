"""Sync benchmark: drain a 24 h backlog of summaries to a local S3 (moto) server.

The backlog is made the way the agent makes it: readings in the database, the real
summariser closing every period, the real uploader draining to a real S3 HTTP
endpoint (moto's threaded server on 127.0.0.1). Only the drain is timed.
"""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from agent import blocks, outbox
from agent import schema as t
from agent.errors import EdgewatchError
from agent.sqlite import open_engine
from agent.sync.summaries import Summarizer, SummaryConfig
from agent.sync.targets import S3Options, S3Target
from agent.sync.uploader import Uploader

BUCKET = "edgewatch-bench"
#: Readings per summary period in the synthetic backlog (enough for real statistics).
READINGS_PER_PERIOD = 6
SENSORS = ("current_a", "flow_m3_h", "pressure_bar", "temp_c", "vib_rms_mm_s")
#: Fake credentials for the local moto server (it accepts any).
LOCAL_KEY = "bench"
SERVER_START_TIMEOUT_S = 30.0


@dataclass
class SyncBenchReport:
    assets: int
    hours: float
    period_s: int
    concurrency: int
    objects: int = 0
    bytes: int = 0
    prepare_s: float = 0.0
    drain_s: float = 0.0
    objects_per_s: float = 0.0
    mb_per_s: float = 0.0
    objects_in_bucket: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EdgewatchError("the local moto S3 server exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling for the port, bounded by the deadline
    raise EdgewatchError(
        f"the local moto S3 server did not listen within {SERVER_START_TIMEOUT_S} s"
    )


def _fill(db_path: Path, assets: int, hours: float, period_s: int, now_ms: int) -> int:
    """Readings for ``assets`` over ``hours`` ending at ``now_ms``; returns the start."""
    rng = random.Random(7)
    period_ms = period_s * 1000
    periods = int(hours * 3600 // period_s)
    start = ((now_ms - periods * period_ms) // period_ms) * period_ms - period_ms
    step = period_ms // READINGS_PER_PERIOD
    engine = open_engine(db_path, create=False)
    try:
        sets = blocks.SensorSets()
        with engine.begin() as conn:
            for a in range(assets):
                aid = conn.execute(
                    insert(t.assets)
                    .values(
                        site="bench",
                        name=f"pump-{a:03d}",
                        first_seen_ms=start,
                        last_seen_ms=now_ms,
                        state="healthy",
                    )
                    .returning(t.assets.c.id)
                ).scalar_one()
                rows: list[blocks.Row] = []
                for i in range(periods * READINGS_PER_PERIOD):
                    ts = start + i * step
                    values = {s: round(rng.gauss(10.0, 1.0), 4) for s in SENSORS}
                    rows.append((ts, ts, values))
                blocks.insert_readings(conn, aid, rows, sets)
    finally:
        engine.dispose()
    return start


def bench_sync(
    db_path: Path,
    workdir: Path,
    *,
    assets: int = 50,
    hours: float = 24.0,
    period_s: int = 300,
    concurrency: int = 8,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> SyncBenchReport:
    """Build the backlog in the (migrated, empty) database at ``db_path`` and drain it."""
    try:
        import moto.server  # noqa: F401 - only to fail early with a clear message
    except ImportError:
        raise EdgewatchError(
            "the sync benchmark needs moto's S3 server",
            hint="install the dev extras: pip install 'edgewatch[dev]'",
        ) from None
    report = SyncBenchReport(assets, hours, period_s, concurrency)
    t0 = time.monotonic()
    now = outbox.now_ms()
    _fill(db_path, assets, hours, period_s, now)
    engine = open_engine(db_path, create=False)
    port = _free_port()
    # Its own process, like a real endpoint: the server must not share our GIL.
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, server)
        Summarizer(engine, SummaryConfig("bench", "gw-bench", period_s)).run_once(now)
        options = S3Options(
            endpoint_url=f"http://127.0.0.1:{port}",
            region="us-east-1",
            access_key_id=LOCAL_KEY,
            secret_access_key=LOCAL_KEY,
        )
        target = S3Target(BUCKET, "fleet", options)
        target.client.create_bucket(Bucket=BUCKET)
        uploader = Uploader(engine, target, workdir, concurrency=concurrency)
        report.prepare_s = time.monotonic() - t0
        t1 = time.monotonic()
        drained = asyncio.run(uploader.drain(ignore_backoff=True, on_progress=on_progress))
        report.drain_s = time.monotonic() - t1
        if drained.error is not None:
            raise EdgewatchError(f"benchmark drain failed: {drained.error}")
        report.objects = drained.uploaded
        report.bytes = drained.bytes
        report.objects_per_s = drained.uploaded / report.drain_s if report.drain_s else 0.0
        report.mb_per_s = drained.bytes / 1e6 / report.drain_s if report.drain_s else 0.0
        paginator = target.client.get_paginator("list_objects_v2")
        report.objects_in_bucket = sum(
            len(page.get("Contents", [])) for page in paginator.paginate(Bucket=BUCKET)
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
        engine.dispose()
    return report
