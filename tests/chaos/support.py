"""Tools of the fault-injection suite: load, a TCP proxy, a persistent broker, figures.

The scale (``EDGEWATCH_CHAOS_SCALE``: ``short``, the default and what CI runs;
``medium``; ``full``, the issue's counts) sets how many faults each scenario injects
and how many messages it sends. Only ``medium`` and ``full`` write docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from agent import blocks
from agent import schema as t
from agent.errors import PayloadError
from agent.ingest.decode import DecodeLimits, decode_payload
from agent.localbroker import LocalBroker
from agent.sqlite import open_engine
from simulators.publisher import make_publisher
from tests.e2e.harness import AgentProcess, query

SITE = "chaos"
TOPIC = "edgewatch/{site}/{asset}/telemetry"
SCALE_ENV = "EDGEWATCH_CHAOS_SCALE"


@dataclass(frozen=True)
class Scale:
    name: str
    kills: int
    kill_messages: int
    broker_restarts: int
    uplink_cuts: int
    offline_hours: int
    decoder_payloads: int
    live_payloads: int
    flood_assets: int
    #: Messages of the 24 h offline scenario (wide readings: over the 16 MiB budget).
    offline_messages: int
    #: Messages of the disk-full scenario (before, while and after the disk fills).
    disk_full_messages: int

    @property
    def writes_docs(self) -> bool:
        return self.name != "short"


SCALES = {
    "short": Scale("short", 4, 1_600, 2, 2, 24, 2_000, 1_000, 1_000, 94_000, 1_500),
    "medium": Scale("medium", 25, 8_000, 6, 6, 24, 20_000, 3_000, 3_000, 125_000, 6_000),
    "full": Scale("full", 100, 30_000, 20, 20, 24, 100_000, 10_000, 10_000, 190_000, 15_000),
}


def current_scale() -> Scale:
    name = os.environ.get(SCALE_ENV, "short").strip() or "short"
    if name not in SCALES:
        raise ValueError(f"{SCALE_ENV}={name!r}: use one of {sorted(SCALES)}")
    return SCALES[name]


# -- load ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    #: The reading's (asset, ts_ms) for a good message; None for a bad one.
    reading: tuple[str, int] | None
    #: The dead-letter reason the agent must give a bad message.
    reason: str | None = None


@dataclass
class Load:
    messages: list[Message]

    @property
    def good(self) -> set[tuple[str, int]]:
        return {m.reading for m in self.messages if m.reading is not None}

    @property
    def bad(self) -> Counter[tuple[str, str]]:
        return Counter((m.topic, m.reason) for m in self.messages if m.reason is not None)


def sensors(asset_index: int, k: int, width: int = 3) -> dict[str, float]:
    base = {"temp_c": 40.0, "vib_mm_s": 2.0, "current_a": 11.0}
    values = {name: round(v + 0.01 * ((k * 7 + asset_index) % 50), 3) for name, v in base.items()}
    # Noise to the sixth decimal: readings are stored compressed, and a smooth series
    # would take too little room to fill a disk budget.
    rng = random.Random(asset_index << 32 | k)
    for extra in range(width - 3):
        values[f"aux{extra:03d}_v"] = round(1.0 + rng.random(), 6)
    return values


def good_payload(ts_s: int, values: dict[str, float]) -> bytes:
    return json.dumps({"ts": ts_s, "values": values}).encode()


def bad_message(n: int, asset: str, ts_s: int) -> Message:
    """The n-th bad message: every one distinct (dead letters are keyed by content)."""
    topic = TOPIC.format(site=SITE, asset=asset)
    kind = n % 6
    if kind == 0:
        return Message(topic, b'{"ts": %d, "values": {"temp_c": ' % n, None, "invalid_json")
    if kind == 1:
        return Message(topic, b"\xff\xfe bad %d" % n, None, "invalid_utf8")
    if kind == 2:
        doc = {"ts": ts_s, "values": {"temp_c": f"hot {n}"}}
        return Message(topic, json.dumps(doc).encode(), None, "schema")
    if kind == 3:
        text = f'{{"ts": {ts_s}, "values": {{"temp_c": NaN}}, "n": {n}}}'
        return Message(topic, text.encode(), None, "non_finite")
    if kind == 4:
        doc2 = {"ts": 1_000_000 + n, "values": {"temp_c": 1.0}}
        return Message(topic, json.dumps(doc2).encode(), None, "ts_past")
    bad_topic = TOPIC.format(site=SITE, asset=f" padded-{n}")
    doc3 = {"ts": ts_s, "values": {"temp_c": 1.0}}
    return Message(bad_topic, json.dumps(doc3).encode(), None, "bad_asset_name")


def mixed_load(
    messages: int,
    *,
    assets: int = 4,
    bad_every: int = 10,
    period_s: int = 10,
    width: int = 3,
    start_s: int | None = None,
    prefix: str = "c",
) -> Load:
    """Readings of ``assets`` machines ``period_s`` apart, ending an hour ago, with one
    bad message in every ``bad_every`` (of six kinds, each distinct)."""
    per_asset = messages // assets + 1
    start = start_s if start_s is not None else int(time.time()) - per_asset * period_s - 3600
    out: list[Message] = []
    k = [0] * assets
    for n in range(messages):
        a = n % assets
        asset = f"{prefix}-{a}"
        ts_s = start + k[a] * period_s
        if bad_every and n % bad_every == bad_every - 1:
            out.append(bad_message(n, asset, ts_s))
            continue
        out.append(
            Message(
                TOPIC.format(site=SITE, asset=asset),
                good_payload(ts_s, sensors(a, k[a], width)),
                (asset, ts_s * 1000),
            )
        )
        k[a] += 1
    check_reasons(out)
    return Load(out)


def check_reasons(messages: Sequence[Message]) -> None:
    """The decoder, run here, agrees with the reason each bad payload is meant to get."""
    now = int(time.time() * 1000)
    for m in messages:
        if m.reason is None or m.reason == "bad_asset_name":
            continue
        try:
            decode_payload("x", SITE, m.payload, now_ms=now, limits=DecodeLimits())
        except PayloadError as exc:
            assert exc.reason == m.reason, (m, exc)
        else:
            raise AssertionError(f"{m} decodes")


def publish_all(
    host: str,
    port: int,
    messages: Sequence[Message],
    *,
    rate_msg_s: float = 0.0,
    sent: list[int] | None = None,
    reconnect_timeout_s: float = 120.0,
) -> None:
    """Publish at QoS 1 (optionally paced) and wait for every PUBACK."""
    with make_publisher(host, port, qos=1, reconnect_timeout_s=reconnect_timeout_s) as pub:
        started = time.monotonic()
        for seq, m in enumerate(messages):
            if rate_msg_s:
                ahead = seq / rate_msg_s - (time.monotonic() - started)
                if ahead > 0:
                    pub.wait(ahead)  # pacing the load, not synchronisation
            assert pub.publish(seq, m.topic, m.payload), "the publisher gave up on the broker"
            if sent is not None:
                sent[0] = seq + 1
        assert pub.flush(timeout_s=reconnect_timeout_s), "not every message was acknowledged"


class Publishing:
    """``publish_all`` in a thread; ``join()`` re-raises its failure."""

    def __init__(self, host: str, port: int, messages: Sequence[Message], **kw: Any) -> None:
        self.sent = [0]
        self.error: BaseException | None = None

        def run() -> None:
            try:
                publish_all(host, port, messages, sent=self.sent, **kw)
            except BaseException as exc:  # reported by join()
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout_s: float) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the publisher did not finish"
        if self.error is not None:
            raise self.error


# -- what the agent stored ---------------------------------------------------------------


def stored_readings(db: Path) -> Counter[tuple[str, int]]:
    """(asset, ts) of every stored reading, decoded from the blocks: a reading stored
    twice (in one block or in two) counts twice."""
    if not db.exists():
        return Counter()
    engine = open_engine(db, create=False, read_only=True)
    try:
        with engine.connect() as conn:
            names = {
                int(i): str(n) for i, n in conn.execute(select(t.assets.c.id, t.assets.c.name))
            }
            return Counter(
                (names[int(owner)], int(ts))
                for owners, block in blocks.read_all_blocks(conn)
                for owner, ts in zip(owners.tolist(), block.ts_ms.tolist(), strict=True)
            )
    finally:
        engine.dispose()


def stored_dead_letters(db: Path) -> Counter[tuple[str, str]]:
    return Counter((str(t), str(r)) for t, r in query(db, "select topic, reason from dead_letters"))


def count(db: Path, table: str) -> int:
    """Rows of ``table``; for "readings", readings stored (the blocks' counts)."""
    if table == "readings":
        rows = query(db, "select coalesce(sum(count), 0) from reading_blocks")
        return int(rows[0][0]) if rows else 0
    rows = query(db, f"select count(*) from {table}")
    return int(rows[0][0]) if rows else 0


@dataclass
class Accounting:
    lost: int
    duplicated: int
    detail: str


def account(db: Path, load: Load) -> Accounting:
    """Every published message is a reading row or a dead letter, exactly once."""
    readings = stored_readings(db)
    letters = stored_dead_letters(db)
    good = load.good
    bad = load.bad
    missing_r = good - set(readings)
    extra_r = set(readings) - good
    missing_d = bad - letters
    extra_d = letters - bad
    lost = len(missing_r) + sum(missing_d.values())
    duplicated = len(extra_r) + sum(extra_d.values())
    detail = (
        f"missing readings {sorted(missing_r)[:5]}, unexpected readings {sorted(extra_r)[:5]}, "
        f"missing dead letters {list(missing_d.items())[:5]}, "
        f"unexpected dead letters {list(extra_d.items())[:5]}"
    )
    return Accounting(lost, duplicated, detail)


@dataclass
class LedgerAccounting:
    """What was published against what is stored and what the loss ledger names."""

    #: Published messages neither stored nor named by a ledger entry.
    lost: int
    #: Stored twice or never published, or named by the ledger but not missing.
    duplicated: int
    #: Readings and dead letters the ledger names (all missing, all published).
    readings_dropped: int
    letters_dropped: int
    #: Ledger rows by kind.
    entries: Counter[str]
    detail: str


def account_ledger(db: Path, load: Load) -> LedgerAccounting:
    """Every published message is a reading row or a dead letter once, or dropped with a
    loss-ledger entry that says so exactly: per asset the count of missing readings and
    a time range holding each of them, per reason the count of missing dead letters; an
    outbox key the ledger names is gone from the outbox."""
    readings = stored_readings(db)
    letters = stored_dead_letters(db)
    missing_r: dict[str, list[int]] = {}
    for asset, ts in load.good - set(readings):
        missing_r.setdefault(asset, []).append(ts)
    missing_d: Counter[str] = Counter()
    for (_topic, reason), n in (load.bad - letters).items():
        missing_d[reason] += n
    named_r: Counter[str] = Counter()
    ranges: dict[str, list[tuple[int, int]]] = {}
    named_d: Counter[str] = Counter()
    named_keys: list[str] = []
    entries: Counter[str] = Counter()
    for kind, items, detail_json in query(db, "select kind, items, detail_json from loss_ledger"):
        entries[str(kind)] += 1
        detail = json.loads(detail_json)
        if kind == "readings":
            assert sum(int(a["items"]) for a in detail["assets"].values()) == items, detail
            for asset, span in detail["assets"].items():
                named_r[asset] += int(span["items"])
                first, last = span["ts_ms_range"]
                ranges.setdefault(asset, []).append((int(first), int(last)))
        elif kind == "dead_letters":
            assert sum(int(n) for n in detail["reasons"].values()) == items, detail
            for reason, n in detail["reasons"].items():
                named_d[str(reason)] += int(n)
        else:
            named_keys += [str(k) for k in detail.get("keys", [])]
    outside = sorted(
        (asset, ts)
        for asset, stamps in missing_r.items()
        for ts in stamps
        if not any(first <= ts <= last for first, last in ranges.get(asset, []))
    )
    unnamed_r = {
        a: max(len(stamps) - named_r[a], sum(1 for o in outside if o[0] == a))
        for a, stamps in missing_r.items()
    }
    overnamed_r = {a: n - len(missing_r.get(a, [])) for a, n in named_r.items()}
    unnamed_d = missing_d - named_d
    overnamed_d = named_d - missing_d
    keys_left = set()
    if named_keys:
        present = {str(k) for (k,) in query(db, "select object_key from outbox")}
        keys_left = set(named_keys) & present
    extra_r = set(readings) - load.good
    extra_d = letters - load.bad
    lost = sum(unnamed_r.values()) + sum(unnamed_d.values())
    duplicated = (
        sum(n - 1 for n in readings.values())
        + len(extra_r)
        + sum(extra_d.values())
        + sum(n for n in overnamed_r.values() if n > 0)
        + sum(overnamed_d.values())
        + len(keys_left)
    )
    detail = (
        f"readings missing and not ledgered {dict(unnamed_r)}, outside every ledgered "
        f"range {outside[:5]}, ledgered but not missing {overnamed_r}; dead letters "
        f"missing and not ledgered {dict(unnamed_d)}, ledgered but not missing "
        f"{dict(overnamed_d)}; unexpected readings {sorted(extra_r)[:5]}, unexpected dead "
        f"letters {list(extra_d.items())[:5]}; ledgered keys still in the outbox "
        f"{sorted(keys_left)[:5]}"
    )
    return LedgerAccounting(
        lost,
        duplicated,
        sum(len(v) for v in missing_r.values()),
        sum(missing_d.values()),
        entries,
        detail,
    )


def files_bytes(data_dir: Path, db: Path) -> int:
    """What the disk budget bounds, as the file system sees it: the database file, its
    WAL and shared-memory files, and the outbox files."""
    total = 0
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    outbox_dir = data_dir / "outbox"
    if outbox_dir.exists():
        total += sum(p.stat().st_size for p in outbox_dir.rglob("*") if p.is_file())
    return total


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db, timeout=30)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return ",".join(str(r[0]) for r in rows)


def vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def crashed_lines(agent: AgentProcess) -> list[str]:
    """Tracebacks and unhandled errors in the agent's log."""
    with agent._lock:
        events = list(agent.events)
    return [
        json.dumps(e)[:4000]
        for e in events
        if e.get("event") == "non-json"
        or "Traceback" in json.dumps(e)
        or e.get("level") == "critical"
    ]


# -- a TCP proxy between the agent and the object store --------------------------------


class TcpProxy:
    """127.0.0.1:port -> upstream; ``cut()`` drops every connection and refuses new
    ones (the uplink is gone), ``restore()`` lets them through again."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self.connections = 0
        self.refused = 0
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:
                    self.refused += 1
                    client.close()  # a refused uplink: reset at once
                    continue
                self.connections += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._open.discard(s)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            self.cuts += 1
            victims = list(self._open)
        for s in victims:
            self._close(s)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.cuts -= 1  # closing is not one of the test's cuts
        self._listener.close()


# -- a Mosquitto that keeps sessions across its restarts -------------------------------


class PersistentBroker(LocalBroker):
    """Mosquitto on a fixed port that saves its sessions and queues when stopped."""

    def config_text(self) -> str:
        store = self.workdir / "store"
        store.mkdir(parents=True, exist_ok=True)
        text = super().config_text().replace("persistence false", "persistence true")
        text += f"persistence_location {store}/\n"
        if os.geteuid() == 0:
            # Started as root, Mosquitto drops to the "mosquitto" user, which cannot
            # write the test's folder: it would run without saving anything.
            text += "user root\n"
        return text


# -- the figures -------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    runs: int
    messages: int
    lost: int
    duplicated: int
    crashes: int
    integrity: str
    rss: str = "-"
    notes: str = ""


@dataclass
class Report:
    scale: Scale
    rows: list[Row] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def markdown(self) -> str:
        cpu = "unknown CPU"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.started))
        took = (time.time() - self.started) / 60
        lines = [
            "# Reliability: the fault-injection suite's figures",
            "",
            "Generated by `make test-chaos` (tests/chaos/, scale "
            f"`{self.scale.name}`); do not edit by hand. Every scenario runs the real agent "
            "(`edgewatch run`) against a real Mosquitto and, where it syncs, a moto S3 "
            "server; `lost` and `duplicated` compare what was published (or produced) "
            "with what was stored, dead-lettered, ledgered or uploaded, and the suite "
            "asserts both are 0, no crash, and `PRAGMA integrity_check` = ok.",
            "",
            f"Run: {date}, {took:.1f} min, {platform.node() or 'host'}: {cpu}, "
            f"{os.cpu_count()} cores, {mem_gb:.1f} GB RAM, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}.",
            "",
            "| scenario | runs | messages | lost | duplicated | crashes | integrity_check "
            "| RSS | notes |",
            "|---|---:|---:|---:|---:|---:|---|---|---|",
        ]
        order = {name: i for i, name in enumerate(SCENARIOS)}
        for r in sorted(self.rows, key=lambda r: order.get(r.scenario, 99)):
            lines.append(
                f"| {r.scenario} | {r.runs:,} | {r.messages:,} | {r.lost} | {r.duplicated} "
                f"| {r.crashes} | {r.integrity} | {r.rss} | {r.notes} |"
            )
        missing = [s for s in SCENARIOS if s not in {r.scenario for r in self.rows}]
        if missing:
            lines += ["", f"Not run or failed in this run: {', '.join(missing)}."]
        lines += ["", SCENARIO_NOTES]
        return "\n".join(lines) + "\n"


SCENARIOS = (
    "kill -9 under load, sync to S3",
    "Mosquitto restarted mid-stream",
    "uplink cut mid-upload",
    "24 h offline, disk budget reached",
    "disk full (tmpfs data_dir)",
    "decoder fuzz (hypothesis)",
    "live agent fuzz",
    "asset flood",
)

SCENARIO_NOTES = """\
What each row does:

- **kill -9**: mixed QoS 1 load (one bad message in ten, six kinds, each distinct)
  paced into the agent while it syncs to S3; the agent is killed with SIGKILL at random
  progress points (by stored messages) and restarted. Then a clean stop and
  `edgewatch sync now`: every message is one reading row or one dead letter, and the
  bucket holds exactly the outbox's keys (each summary period of each asset once).
- **Mosquitto restarted**: a Mosquitto with persistence on a fixed port, stopped and
  started again while the publisher streams; the agent's persistent session and QoS 1
  carry every message across.
- **uplink cut**: a TCP proxy in the test between the agent and moto drops every
  connection and refuses new ones at random points of the upload, then lets them through
  again; the bucket ends with exactly the outbox's keys.
- **24 h offline**: 24 hours of wide, noisy readings (100 sensors) and bad messages published
  as fast as QoS 1 goes, with the S3 target unreachable (a closed port) and a 16 MiB
  disk budget that the agent's own budget duty (every 60 s) enforces; `lost` counts
  readings and dead letters neither stored nor named in the loss ledger (per asset
  counts and time ranges, per reason counts), `duplicated` what is stored twice or
  named without being missing; the files (database, WAL, outbox) end within 105 % of
  the budget.
- **disk full**: data_dir on an 8 MiB tmpfs filled to the last byte by a file while
  messages keep coming; the agent keeps running, logs the failure and the recovery
  once each, keeps every committed row, writes nothing while full, and stores every
  held message once the file is deleted (QoS 1 redelivery).
- **decoder fuzz**: hypothesis-generated payloads through `decode_payload`: each either
  readings or a `PayloadError` with a known reason, nothing else.
- **live agent fuzz**: generated payloads published to the agent, one topic each: each
  topic ends as readings or one dead letter with a known reason, not both, not neither.
- **asset flood**: one reading each from that many new asset names (`ingest.max_assets`
  = 200); RSS is the agent's VmRSS before the flood / its peak during it.
"""


# -- the object store against the outbox ---------------------------------------------------


@dataclass
class ObjectAccounting:
    objects: int
    lost: int
    duplicated: int
    detail: str


def bucket_keys(client: Any, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [str(o["Key"]) for o in page.get("Contents", [])]
    return keys


def account_objects(db: Path, client: Any, bucket: str, prefix: str = "edge") -> ObjectAccounting:
    """The bucket holds exactly the outbox's items, each once and intact, and every
    summary row (one per asset and period) is one object."""
    import hashlib

    rows = query(db, "select object_key, idempotency_key, state, sha256, kind from outbox")
    expected = {str(ok or ik): (str(state), sha, str(kind)) for ok, ik, state, sha, kind in rows}
    keys = bucket_keys(client, bucket)
    outside = [k for k in keys if not k.startswith(prefix + "/")]
    found = Counter(k[len(prefix) + 1 :] for k in keys if k not in outside)
    lost = sorted(set(expected) - set(found))
    not_done = sorted(k for k, (state, _, _) in expected.items() if state != "done")
    unexpected = sorted(set(found) - set(expected))
    corrupt = []
    for key in sorted(set(found) & set(expected)):
        sha = expected[key][1]
        if sha:
            body = client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()
            if hashlib.sha256(body).hexdigest() != sha:
                corrupt.append(key)
    summaries = query(
        db, "select count(*), count(distinct asset_id || ':' || period_start_ms) from summaries"
    )
    total_s, distinct_s = (int(v) for v in summaries[0]) if summaries else (0, 0)
    summary_objects = sum(1 for k in found if expected.get(k, ("", "", ""))[2] == "summary")
    duplicated = (
        len(unexpected) + len(outside) + (total_s - distinct_s) + sum(n - 1 for n in found.values())
    )
    detail = (
        f"lost {lost[:5]}, not done {not_done[:5]}, unexpected {unexpected[:5]}, outside "
        f"{outside[:5]}, corrupt {corrupt[:5]}, summaries {total_s} rows / {distinct_s} "
        f"distinct / {summary_objects} objects"
    )
    lost_n = len(lost) + len(corrupt) + max(0, total_s - summary_objects) + len(not_done)
    return ObjectAccounting(len(keys), lost_n, duplicated, detail)


def events(agent: AgentProcess, prefix: str) -> int:
    """How many of the agent's log lines (this life) start with ``prefix``."""
    with agent._lock:
        return sum(1 for e in agent.events if str(e.get("event", "")).startswith(prefix))


def reached(measure: Callable[[], int], target: int) -> Callable[[], bool]:
    """A condition for wait_until: ``measure()`` is at least ``target``."""
    return lambda: measure() >= target
