"""Issue 16, points 2, 3 and 6: a bad asset name or a refused object never switches
off the disk budget or holds the backlog; keys never merge two assets."""

from __future__ import annotations

import asyncio
import http.client
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, func, insert, select

from agent import blocks, outbox
from agent import schema as t
from agent.sqlite import open_engine
from agent.sync.budget import DEAD_LETTER_FLOOR, BudgetDuty, Housekeeper, prepare
from agent.sync.retraining import HOUR_MS
from agent.sync.service import SyncService, sync_status
from agent.sync.targets import FileTarget
from agent.sync.uploader import Uploader
from tests.agent.sync.conftest import AGENT, SITE, S3Server, make_settings

T0 = 1_763_856_000_000  # 2025-11-23 00:00 UTC, an hour boundary
MB = 1024 * 1024
WAIT_S = 120.0


# -- keys -------------------------------------------------------------------------------


def _key(asset: str, name: str = "x.json") -> str:
    return outbox.item_key(
        site=SITE, agent=AGENT, kind=outbox.SUMMARY, ts_ms=T0, asset=asset, name=name
    )


def test_keys_keep_plain_names_and_never_merge_two_names() -> None:
    assert _key("pump-1") == f"{SITE}/{AGENT}/summary/2025/11/23/pump-1/x.json"
    names = [
        "pump 1",
        "pump_1",
        "pump1.",
        "pump1",
        ".",
        "_",
        "_agent",
        "x" * 300,
        "x" * 301,
        "pump_1--0123456789abcdef",
        "Pumpe-Süd",
        "a/b",
        "a_b",
    ]
    keys = [_key(n) for n in names]
    assert len(set(keys)) == len(names)  # one folder per distinct name
    for name, key in zip(names, keys, strict=True):
        scope = key.split("/")[-2]
        assert len(scope.encode()) <= 100 and "/" not in scope and scope not in {".", ".."}
        if name in {"pump_1", "pump1", "_", "Pumpe-Süd", "a_b"}:
            assert scope == name  # names that need no change keep today's key
    gateway = outbox.item_key(
        site=SITE, agent=AGENT, kind=outbox.SUMMARY, ts_ms=T0, asset=None, name="x.json"
    )
    assert _key("_agent") != gateway  # an asset never lands in the gateway's folder
    assert _key("pump-1", "a b.json").endswith(".json")


# -- point 2: a long asset name and a failing export ------------------------------------


def _asset(engine: Engine, name: str, hours: int) -> None:
    """An asset commissioned at the end of its ``hours`` of readings (all baseline)."""
    values = orjson.dumps({"temp_c": 40.5, "flow_m3_h": 12.25}).decode()
    with engine.begin() as conn:
        aid = conn.execute(
            insert(t.assets)
            .values(
                site=SITE,
                name=name,
                first_seen_ms=T0,
                last_seen_ms=T0 + hours * HOUR_MS,
                state="healthy",
                commissioned_ms=T0 + hours * HOUR_MS,
            )
            .returning(t.assets.c.id)
        ).scalar_one()
        blocks.insert_readings(
            conn, aid, [(T0 + i * 60_000, 0, orjson.loads(values)) for i in range(hours * 60)]
        )


def test_long_asset_name_exports_and_a_failing_export_stops_nothing(
    migrated_db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = migrated_db.parent
    settings = make_settings(
        data_dir,
        target=(tmp_path / "cloud").as_uri(),
        retraining_before_s=60,
        retraining_after_s=60,
        ttl_days={"summary": 1.0},
    )
    engine = open_engine(migrated_db, create=False)
    long_name = "pump-" + "x" * 300  # ENAMETOOLONG as a file name before the fix
    for name in (long_name, "pump-ok", "pump-blocked"):
        _asset(engine, name, hours=2)
    # pump-blocked's export folder cannot be made (a file where it should be): a real
    # OSError on every pass, for that asset only.
    folder = (
        data_dir
        / outbox.OUTBOX_DIR
        / "/".join(
            outbox.item_key(
                site=SITE,
                agent=AGENT,
                kind=outbox.RETRAINING,
                ts_ms=T0,
                asset="pump-blocked",
                name="f.parquet",
            ).split("/")[:-1]
        )
    )
    folder.parent.mkdir(parents=True)
    folder.write_bytes(b"in the way")
    now = T0 + 4 * HOUR_MS
    # A summary past its TTL: the TTL must still run with the export failing.
    with engine.begin() as conn:
        outbox.enqueue(
            conn, key="old", kind=outbox.SUMMARY, created_ms=now - 2 * 86_400_000, body=b"{}"
        )

    service = SyncService(settings, engine)
    with caplog.at_level(logging.ERROR, logger="agent.sync"):
        first = service.produce(now_ms=now)
        second = service.produce(now_ms=now)
    assert first["retraining_files"] == 4  # 2 h of the long-named and the plain asset
    assert first["ttl_dropped"] == 1 and second["ttl_dropped"] == 0
    assert "budget_dropped" in first and "budget_dropped" in second  # the budget ran
    failures = [r for r in caplog.records if "retraining export failed" in r.getMessage()]
    assert len(failures) == 1  # once, not once per pass
    assert "pump-blocked" in str(failures[0].__dict__)

    with engine.connect() as conn:
        keys = (
            conn.execute(select(t.outbox.c.object_key).where(t.outbox.c.kind == outbox.RETRAINING))
            .scalars()
            .all()
        )
    assert len(keys) == 4
    for key in keys:
        assert all(len(part.encode()) <= 100 for part in key.split("/"))
    long_keys = [k for k in keys if k.split("/")[-2].startswith("pump-xxxx")]
    assert len(long_keys) == 2
    report = asyncio.run(service.drain(ignore_backoff=True))
    assert report.error is None and report.uploaded >= 4
    assert set(keys) <= set(FileTarget(tmp_path / "cloud").list_objects())
    engine.dispose()


# -- point 3: a flood of dead letters, sync disabled -------------------------------------


def _files_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


async def test_dead_letter_flood_never_pushes_out_good_readings_with_sync_off(
    migrated_db: Path,
) -> None:
    budget_mb = 16
    settings = make_settings(migrated_db.parent, enabled=False, disk_budget_mb=budget_mb)
    engine = open_engine(migrated_db, create=False)
    assert prepare(engine)  # what the runtime does before the recorder starts
    good = 30_000
    _asset(engine, "pump-1", hours=good // 60)
    letters = 40_000
    payload = b"{not json " + b"z" * 1000
    with engine.begin() as conn:
        for start in range(0, letters, 5000):
            conn.execute(
                insert(t.dead_letters),
                [
                    {
                        "received_ms": T0 + i,
                        "topic": "edgewatch/plant-a/pump-9/telemetry",
                        "payload": payload,
                        "payload_size": len(payload),
                        "reason": "bad_json",
                        "detail": "expected value",
                    }
                    for i in range(start, start + 5000)
                ],
            )
    assert _files_bytes(migrated_db) > 2 * budget_mb * MB

    duty = BudgetDuty(settings, interval_s=3600)
    task = asyncio.create_task(duty.run())
    try:
        await asyncio.wait_for(duty.passed.wait(), WAIT_S)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with engine.connect() as conn:
        readings = blocks.count_readings(conn)
        left = conn.execute(select(func.count()).select_from(t.dead_letters)).scalar_one()
        newest = conn.execute(select(func.max(t.dead_letters.c.received_ms))).scalar_one()
        ledger = conn.execute(select(t.loss_ledger)).all()
        check = conn.exec_driver_sql("PRAGMA integrity_check").scalar_one()
    engine.dispose()
    assert readings == good  # not one good reading went for the flood
    assert DEAD_LETTER_FLOOR <= left < letters
    assert newest == T0 + letters - 1  # the newest dead letters stay for diagnosis
    # The files on disk (database, WAL, shared memory) are back under the budget.
    assert _files_bytes(migrated_db) <= budget_mb * MB * 1.05
    assert {row.kind for row in ledger} == {"dead_letters"}
    assert all(row.reason == "disk_budget" for row in ledger)
    assert sum(row.items for row in ledger) == letters - left  # every deletion counted
    assert orjson.loads(ledger[0].detail_json)["reasons"] == {"bad_json": ledger[0].items}
    assert check == "ok"
    assert duty.last_report is not None and not duty.last_report.over


# -- point 6: quarantine -----------------------------------------------------------------


def _enqueue(engine: Engine, keys: list[str]) -> None:
    with engine.begin() as conn:
        for i, key in enumerate(keys):
            outbox.enqueue(
                conn, key=key, kind=outbox.SUMMARY, created_ms=T0 + i, body=f"{i}".encode()
            )


def _states(engine: Engine) -> dict[str, tuple[str, int, str | None]]:
    o = t.outbox
    with engine.connect() as conn:
        rows = conn.execute(select(o.c.object_key, o.c.state, o.c.attempts, o.c.last_error))
        return {str(r[0]): (str(r[1]), int(r[2]), r[3]) for r in rows}


async def test_an_object_the_file_target_cannot_store_is_set_aside(
    migrated_db: Path, tmp_path: Path
) -> None:
    data_dir = migrated_db.parent
    engine = open_engine(migrated_db, create=False)
    # An item enqueued by an older version, with a key no file system can hold; it is
    # the oldest, so it is first in line.
    bad = f"{SITE}/{AGENT}/summary/2025/11/23/{'p' * 300}/x.json"
    good = [_key(f"pump-{i}") for i in range(5)]
    _enqueue(engine, [bad, *good])
    target = FileTarget(tmp_path / "cloud")
    uploader = Uploader(engine, target, data_dir, concurrency=1)
    report = await uploader.drain()
    assert (report.uploaded, report.quarantined, report.error) == (5, 1, None)
    assert set(target.list_objects()) == set(good)
    state, attempts, error = _states(engine)[bad]
    assert (state, attempts) == (outbox.QUARANTINED, 1)
    assert error is not None and "too long" in error
    again = await uploader.drain(ignore_backoff=True)  # set aside: not tried again
    assert (again.uploaded, again.quarantined, again.error) == (0, 0, None)

    settings = make_settings(data_dir, target=target.description)
    info = sync_status(engine, settings)
    assert info["quarantined_items"] == 1 and info["backlog_items"] == 0
    assert info["quarantined"][0]["key"] == bad and info["healthy"] is True

    # The TTL removes it in the end, with a ledger entry naming the refusal.
    keeper = Housekeeper(
        engine, data_dir, site=SITE, agent=AGENT, budget_bytes=10**9, ttl_days={"summary": 1.0}
    )
    assert keeper.apply_ttl(T0 + 2 * 86_400_000) == {"summary": 1}
    with engine.connect() as conn:
        entry = conn.execute(select(t.loss_ledger)).one()
    assert orjson.loads(entry.detail_json)["refused"] == {bad: error}
    engine.dispose()


class _Gate(BaseHTTPRequestHandler):
    """An S3 front that answers like S3 for some keys and passes the rest to moto."""

    protocol_version = "HTTP/1.1"
    upstream = ("127.0.0.1", 0)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, code: str) -> None:
        body = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.command == "PUT" and "refuse-me" in self.path:
            self._answer(400, "KeyTooLongError")
            return
        if self.command == "PUT" and "flaky" in self.path:
            self._answer(503, "ServiceUnavailable")
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward  # noqa: N815


@pytest.fixture
def gate(s3: S3Server) -> Iterator[S3Server]:
    handler = type("Gate", (_Gate,), {"upstream": ("127.0.0.1", s3.port)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = int(server.server_address[1])
    try:
        yield S3Server(f"http://127.0.0.1:{port}", port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


async def test_s3_permanent_refusal_is_set_aside_and_5xx_keeps_its_retry(
    migrated_db: Path, s3: S3Server, gate: S3Server
) -> None:
    bucket = s3.new_bucket()
    engine = open_engine(migrated_db, create=False)
    refused = _key("refuse-me")
    good = [_key(f"pump-{i}") for i in range(5)]
    flaky = _key("flaky")
    _enqueue(engine, [refused, *good, flaky])  # in drain order
    uploader = Uploader(engine, gate.target(bucket), migrated_db.parent, concurrency=1)
    report = await uploader.drain()
    assert (report.uploaded, report.quarantined) == (5, 1)
    assert report.error is not None and "ServiceUnavailable" in report.error
    states = _states(engine)
    assert states[refused][0] == outbox.QUARANTINED
    assert "KeyTooLongError" in str(states[refused][2])
    assert states[flaky][:2] == (outbox.PENDING, 1)  # retried later, with backoff
    stored = await asyncio.to_thread(s3.target(bucket).list_objects)
    assert set(stored) == set(good)
    engine.dispose()
