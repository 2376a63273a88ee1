"""How fast the dashboard's pages are on a realistic database (docs/dashboard.md).

``python -m agent.dashboard.bench [--assets 50] [--days 7]`` builds a database the way
the agent fills one: the fleet simulator's pumps (one reading every
``reading_period_s``), a prediction per asset every ``prediction_period_s`` and the
alerts those predictions open and close, all through the recorder's own writer. The
scores are not a model's (scoring half a million windows would take longer than the
rest): they follow the simulator's ground truth, a noisy healthy level that climbs
past the threshold once a fault develops, with the truth's RUL and an interval of
+-15 %. The queries and pages see the same shape of data either way.

Then every page and its API call is requested in-process through the ASGI app
(routing, database, templates: the server's time without the network), and the
median and worst of ``repeats`` requests are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert

from agent import __version__
from agent import schema as t
from agent.dashboard.app import DashboardConfig, create_app
from agent.dashboard.security import Guard
from agent.domain import (
    Accepted,
    Alert,
    AlertKind,
    AssetState,
    AssetStatus,
    Prediction,
    Reading,
    Severity,
)
from agent.sqlite import open_engine
from agent.storage import labels, migrate
from agent.storage.writer import Heartbeat, Item, Writer
from simulators.fleet import FleetConfig, simulate_runs

SITE = "plant-a"
AGENT = "gw-bench"
MODEL = "pump-cnn-bench"
THRESHOLD = 3.0
#: Readings per recorded message (an hour at the default period).
MESSAGE_READINGS = 360
#: Predictions in a row above (below) the threshold that open (close) an alert.
OPEN_AFTER, CLOSE_AFTER = 3, 5
#: RUL shown for an asset that does not fail in the simulated span.
HEALTHY_RUL_H = 2000.0


@dataclass
class Built:
    path: Path
    assets: int
    days: float
    readings: int
    predictions: int
    alerts: int
    seconds: float
    file_mb: float


def _scores(run: Any, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    healthy = 1.0 + 0.35 * np.abs(rng.standard_normal(len(idx)))
    faulty = np.array([run.fault[i] != "none" for i in idx])
    if not faulty.any():
        return healthy
    onset = int(np.argmax(faulty))
    # The score climbs over the first hours of the fault and then stays high.
    ramp = np.clip((np.arange(len(idx)) - onset) / 120.0, 0.0, 1.0) * 4.0
    return healthy + np.where(faulty, ramp, 0.0)


def _asset_items(run: Any, rng: np.random.Generator, prediction_every: int) -> list[list[Item]]:
    """One asset's readings, predictions and alerts as writer transactions, in time order."""
    asset = run.spec.asset
    ts_ms = (run.ts * 1000).astype(np.int64)
    sensors = run.sensors
    columns = {s: run.values[s] for s in sensors}
    idx = np.arange(prediction_every - 1, len(ts_ms), prediction_every)
    scores = _scores(run, idx, rng)
    rul_h = np.where(np.isfinite(run.rul_s[idx]), run.rul_s[idx] / 3600.0, HEALTHY_RUL_H)
    batches: list[list[Item]] = [
        [AssetStatus(asset, AssetState.HEALTHY, int(ts_ms[0]), baseline_version="bench")]
    ]
    above = below = 0
    opened: int | None = None
    peak = 0.0
    p = 0
    for start in range(0, len(ts_ms), MESSAGE_READINGS):
        stop = min(start + MESSAGE_READINGS, len(ts_ms))
        readings = tuple(
            Reading(
                SITE, asset, int(ts_ms[i]), {s: round(float(columns[s][i]), 4) for s in sensors}
            )
            for i in range(start, stop)
        )
        batch: list[Item] = [Accepted(None, int(ts_ms[stop - 1]), readings=readings)]
        while p < len(idx) and idx[p] < stop:
            end, score, rul = int(ts_ms[idx[p]]), float(scores[p]), float(rul_h[p])
            bad = score > THRESHOLD
            batch.append(
                Prediction(
                    asset,
                    end,
                    MODEL,
                    score,
                    THRESHOLD,
                    bad,
                    rul,
                    end + 40,
                    True,
                    rul * 0.85,
                    rul * 1.15,
                )
            )
            above, below = (above + 1, 0) if bad else (0, below + 1)
            if opened is None and above >= OPEN_AFTER:
                opened, peak = end, score
            if opened is not None:
                peak = max(peak, score)
                severity = Severity.CRITICAL if peak > 2 * THRESHOLD else Severity.WARNING
                closed = end if below >= CLOSE_AFTER else None
                if closed is not None or above == OPEN_AFTER:
                    batch.append(
                        Alert(
                            asset,
                            AlertKind.ANOMALY,
                            severity,
                            opened,
                            peak,
                            score,
                            closed_ms=closed,
                            rul_cycles=rul,
                            model_version=MODEL,
                            last_update_ms=end,
                        )
                    )
                if closed is not None:
                    opened = None
            p += 1
        batches.append(batch)
    return batches


def build_database(
    path: Path,
    *,
    assets: int = 50,
    days: float = 7.0,
    reading_period_s: float = 10.0,
    prediction_period_s: float = 60.0,
    seed: int = 7,
    end_s: float | None = None,
) -> Built:
    """A database of ``assets`` pumps over ``days`` ending at ``end_s`` (default now)."""
    t0 = time.perf_counter()
    duration = days * 86400.0
    start = (end_s if end_s is not None else time.time()) - duration
    migrate.upgrade(path)
    engine = open_engine(path)
    writer = Writer(engine, site=SITE, agent=AGENT)
    rng = np.random.default_rng(seed)
    every = max(1, round(prediction_period_s / reading_period_s))
    config = FleetConfig(
        assets=assets,
        rate_hz=1.0 / reading_period_s,
        duration_s=duration,
        fault_fraction=0.3,
        sensor_fault_fraction=0.0,
        seed=seed,
    )
    readings = predictions = 0
    with engine.begin() as conn:
        conn.execute(
            insert(t.models).values(
                version=MODEL,
                sha256="0" * 64,
                kind="anomaly+rul",
                path="bench",
                installed_ms=int(start * 1000),
                status="active",
                manifest_json='{"rul": {"unit": "h"}}',
            )
        )
    # One asset at a time: a week of one pump is a few MB of arrays, the fleet's is not.
    for a in range(assets):
        one = FleetConfig(**{**asdict(config), "assets": a + 1})
        run = simulate_runs(one, start)[a]
        for batch in _asset_items(run, rng, every):
            writer.write(batch, int(time.time() * 1000))
            for item in batch:
                if isinstance(item, Accepted):
                    readings += len(item.readings)
                elif isinstance(item, Prediction):
                    predictions += 1
    now = int(time.time() * 1000)
    writer.write([Heartbeat(AGENT, 0, __version__, int(start * 1000), now, {"bench": True})], now)
    with engine.connect() as conn:
        alerts = conn.execute(t.alerts.select()).all()
    # A few labels, as operators would have given them.
    for n, row in enumerate(alerts[: max(1, len(alerts) // 3)]):
        labels.label_alert(
            engine, int(row.id), labels.LABELS[n % 3], agent=AGENT, by="bench", note="bench"
        )
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return Built(
        path=path,
        assets=assets,
        days=days,
        readings=readings,
        predictions=predictions,
        alerts=len(alerts),
        seconds=round(time.perf_counter() - t0, 1),
        file_mb=round(path.stat().st_size / 1e6, 1),
    )


@dataclass
class Timing:
    what: str
    url: str
    median_ms: float
    worst_ms: float
    bytes: int


@dataclass
class Timings:
    repeats: int
    rows: list[Timing] = field(default_factory=list)


async def _get(app: Any, url: str) -> tuple[int, bytes]:
    """One GET through the ASGI app in this process: the server's own time."""
    path, _, query = url.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    status = 0
    body = bytearray()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, bytes(body)


def time_pages(path: Path, *, repeats: int = 7) -> Timings:
    """Median and worst in-process request time of each page and API call."""
    return asyncio.run(_time_pages(path, repeats))


async def _time_pages(path: Path, repeats: int) -> Timings:
    engine = open_engine(path, create=False)
    app = create_app(
        engine, DashboardConfig(agent=AGENT, sync=True, guard=Guard("bench", loopback=True))
    )
    with engine.connect() as conn:
        busiest = (
            conn.exec_driver_sql(
                "SELECT a.name FROM assets a JOIN alerts x ON x.asset_id = a.id "
                "GROUP BY a.id ORDER BY count(*) DESC, a.name LIMIT 1"
            ).scalar()
            or conn.exec_driver_sql("SELECT name FROM assets LIMIT 1").scalar()
        )
        last = conn.exec_driver_sql("SELECT max(last_seen_ms) FROM assets").scalar_one()
    week = f"since={int(last) - 7 * 86_400_000}&until={int(last) + 1}"
    urls = [
        ("fleet page", "/"),
        ("fleet API (refresh)", "/api/fleet"),
        ("asset page (day)", f"/assets/{busiest}"),
        ("asset API (day)", f"/api/assets/{busiest}"),
        ("asset page (week)", f"/assets/{busiest}?{week}"),
        ("asset API (week)", f"/api/assets/{busiest}?{week}"),
        ("alerts page", "/alerts"),
    ]
    out = Timings(repeats)
    try:
        for what, url in urls:
            await _get(app, url)  # warm: first query plans, template compilation
            took = []
            size = 0
            for _ in range(repeats):
                t0 = time.perf_counter()
                status, body = await _get(app, url)
                took.append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    raise RuntimeError(f"{url}: HTTP {status}")
                size = len(body)
            out.rows.append(
                Timing(what, url, round(statistics.median(took), 1), round(max(took), 1), size)
            )
    finally:
        engine.dispose()
    return out


@dataclass
class Rss:
    """The agent's memory after the same work, without and with the dashboard."""

    assets: int
    readings: int
    requests: int
    rss_off_mb: float
    rss_on_mb: float
    peak_off_mb: float
    peak_on_mb: float
    runs: int = 1
    each_off_mb: list[float] = field(default_factory=list)
    each_on_mb: list[float] = field(default_factory=list)

    @property
    def growth_mb(self) -> float:
        return round(self.rss_on_mb - self.rss_off_mb, 1)


def _proc_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {key} for process {pid}")


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)  # polls another process's files


def _agent_rss(
    workdir: Path, broker_port: int, http_port: int | None, assets: int, samples: int
) -> tuple[float, float, int, int]:
    """Run ``edgewatch run`` through one fleet's data; its RSS and peak, readings, requests."""
    import signal
    import sqlite3
    import subprocess
    import urllib.request

    from simulators.fleet import publish_fleet
    from simulators.stream import Pacing

    data_dir = workdir / ("on" if http_port else "off")
    config = workdir / f"{data_dir.name}.toml"
    config.write_text(
        '[identity]\nsite = "plant-a"\nagent = "gw-rss"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\n'
        f'[storage]\ndata_dir = "{data_dir}"\n'
        '[sync]\nenabled = false\n[logging]\nlevel = "INFO"\nformat = "json"\n'
    )
    log_path = workdir / f"{data_dir.name}.log"
    exe = Path(sys.executable).with_name("edgewatch")
    command = [str(exe), "--config", str(config), "run"]
    if http_port:
        command += ["--http", f"127.0.0.1:{http_port}"]
    with log_path.open("w") as log:
        agent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    try:
        _wait(lambda: '"subscribed"' in log_path.read_text(), 120, "the agent to subscribe")
        report = publish_fleet(
            FleetConfig(assets=assets, rate_hz=1.0, duration_s=float(samples), seed=5),
            host="127.0.0.1",
            port=broker_port,
            site="plant-a",
            pacing=Pacing.fast(),
        )
        db = data_dir / "edgewatch.db"

        def stored() -> int:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                return int(
                    conn.execute("SELECT coalesce(sum(count), 0) FROM reading_blocks").fetchone()[0]
                )

        _wait(lambda: stored() >= report.stream.readings, 300, "every reading stored")
        requests = 0
        if http_port:
            base = f"http://127.0.0.1:{http_port}"
            pages = ["/", "/api/fleet", "/alerts", "/assets/pump-001", "/api/assets/pump-001"]
            for _ in range(20):
                for page in pages:
                    with urllib.request.urlopen(base + page, timeout=30) as response:
                        response.read()
                    requests += 1
        time.sleep(2.0)  # the recorder's last commits and the allocator settle
        rss, peak = _proc_mb(agent.pid, "VmRSS"), _proc_mb(agent.pid, "VmHWM")
        return rss, peak, stored(), requests
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)


def measure_rss(workdir: Path, *, assets: int = 10, samples: int = 600, runs: int = 3) -> Rss:
    """The same fleet through ``edgewatch run`` and ``edgewatch run --http`` (with 100
    page and API requests), ``runs`` times each in turn: the median resident memory at
    the end of a run, and the median peak (one run's RSS varies by several MB)."""
    from agent.localbroker import LocalBroker, free_port

    offs, ons = [], []
    with LocalBroker(workdir) as broker:
        for n in range(runs):
            where = workdir / f"run-{n}"
            where.mkdir()
            offs.append(_agent_rss(where, broker.port, None, assets, samples))
            ons.append(_agent_rss(where, broker.port, free_port("127.0.0.1"), assets, samples))

    def median(rows: list[tuple[float, float, int, int]], i: int) -> float:
        return round(statistics.median(r[i] for r in rows), 1)

    return Rss(
        assets,
        ons[0][2],
        ons[0][3],
        median(offs, 0),
        median(ons, 0),
        median(offs, 1),
        median(ons, 1),
        runs,
        [r[0] for r in offs],
        [r[0] for r in ons],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=50)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--reading-period-s", type=float, default=10.0)
    parser.add_argument("--prediction-period-s", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--db", type=Path, help="Keep the database here (default: a temp dir).")
    parser.add_argument(
        "--rss",
        action="store_true",
        help="Measure the agent's RSS with and without --http instead (needs mosquitto).",
    )
    args = parser.parse_args(argv)
    if args.rss:
        with tempfile.TemporaryDirectory() as tmp:
            rss = measure_rss(Path(tmp))
        sys.stdout.write(
            f"edgewatch run, {rss.assets} assets, {rss.readings:,} readings: "
            f"median RSS of {rss.runs} runs {rss.rss_off_mb} MB without the dashboard, "
            f"{rss.rss_on_mb} MB with it after {rss.requests} requests: "
            f"{rss.growth_mb:+} MB (peak {rss.peak_off_mb} -> {rss.peak_on_mb} MB; "
            f"each run without {rss.each_off_mb}, with {rss.each_on_mb})\n"
        )
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "dashboard-bench.db"
        if not path.exists():
            built = build_database(
                path,
                assets=args.assets,
                days=args.days,
                reading_period_s=args.reading_period_s,
                prediction_period_s=args.prediction_period_s,
            )
            sys.stdout.write(
                f"built {built.path}: {built.assets} assets x {built.days:g} days, "
                f"{built.readings:,} readings, {built.predictions:,} predictions, "
                f"{built.alerts} alerts, {built.file_mb} MB in {built.seconds} s\n"
            )
        timings = time_pages(path, repeats=args.repeats)
    sys.stdout.write(f"server time per request (median / worst of {timings.repeats}):\n")
    for row in timings.rows:
        sys.stdout.write(
            f"  {row.what:22} {row.median_ms:8.1f} ms {row.worst_ms:8.1f} ms "
            f"{row.bytes / 1024:8.1f} KiB  {row.url}\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
