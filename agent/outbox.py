"""The sync outbox: what the recorder and the sync stage both write (foundation layer).

An outbox row is written in the same transaction as the data it describes, so a
crash either keeps both or neither. Its idempotency key *is* its object key below the
target's prefix, ``site/agent/kind/yyyy/mm/dd/<asset>/<name>``: deterministic from
the data, so writing the same fact twice is a no-op (INSERT OR IGNORE) and uploading
an item twice overwrites the same object with the same bytes.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from agent import schema as t

# Kinds and their priorities: lower drains first, and is dropped last.
ALERT: Final = "alert"
#: An operator's label on an alert (agent.storage.labels): small and the most valuable
#: training fact a deployment has, so it drains right after alerts.
LABEL: Final = "label"
EVENT: Final = "event"
LEDGER: Final = "ledger"
SUMMARY: Final = "summary"
RETRAINING: Final = "retraining"
KINDS: Final = (ALERT, LABEL, EVENT, LEDGER, SUMMARY, RETRAINING)
PRIORITY: Final[dict[str, int]] = {
    ALERT: 0,
    LABEL: 1,
    LEDGER: 1,
    EVENT: 2,
    SUMMARY: 3,
    RETRAINING: 5,
}

PENDING: Final = "pending"
DONE: Final = "done"
DROPPED: Final = "dropped"
#: The target refused the item for good (a too-long key, a permanent 4xx): set aside
#: with its error so the items behind it drain; TTL and the disk budget remove it.
QUARANTINED: Final = "quarantined"

#: Object-key part for items that belong to the gateway rather than one asset.
AGENT_SCOPE: Final = "_agent"
#: Folder below the data directory holding bodies too big to keep inline.
OUTBOX_DIR: Final = "outbox"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


#: Characters a key part keeps as they are (portable in S3 keys and file names).
_KEPT = frozenset("-_.=")
#: A part longer than this (UTF-8 bytes) is shortened: file names stop at 255 bytes.
MAX_PART_BYTES = 128
#: How much of a changed part's readable prefix is kept before its hash.
PREFIX_BYTES = 64
_HASH_HEX = 16
_HASHED = re.compile(rf"--[0-9a-f]{{{_HASH_HEX}}}(\.[A-Za-z0-9]{{1,10}})?$")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}$")


def _kept_as_is(part: str) -> bool:
    return (
        bool(part)
        and all(c.isalnum() or c in _KEPT for c in part)
        and not part.startswith(".")
        and not part.endswith(".")
        and len(part.encode()) <= MAX_PART_BYTES
        # A name that looks like a changed one is changed too, so that the two forms
        # can never meet: that is what makes the mapping collision-free.
        and _HASHED.search(part) is None
    )


def _truncate(text: str, max_bytes: int) -> str:
    encoded = text.encode()[:max_bytes]
    return encoded.decode(errors="ignore")


def safe_part(part: str) -> str:
    """One key level: ``part`` itself when it is portable, bounded and unambiguous,
    else a cleaned prefix plus ``--`` and a hash of the exact text.

    Different inputs give different outputs ("pump 1" / "pump_1", "pump1." / "pump1"),
    and every output is at most ``PREFIX_BYTES`` + 30 bytes. A short extension
    (``.json``, ``.parquet``) stays at the end.
    """
    return part if _kept_as_is(part) else _hashed(part)


def _hashed(part: str) -> str:
    digest = hashlib.blake2b(part.encode(errors="surrogatepass"), digest_size=_HASH_HEX // 2)
    match = _SUFFIX.search(part)
    suffix = match.group(0) if match and match.start() > 0 else ""
    stem = part[: len(part) - len(suffix)]
    cleaned = "".join(c if c.isalnum() or c in _KEPT else "_" for c in stem).strip(".")
    return f"{_truncate(cleaned, PREFIX_BYTES) or '_'}--{digest.hexdigest()}{suffix}"


def item_key(*, site: str, agent: str, kind: str, ts_ms: int, asset: str | None, name: str) -> str:
    """``site/agent/kind/yyyy/mm/dd/<asset>/<name>``: the idempotency and object key.

    ``ts_ms`` picks the date partition and must come from the data (never the clock of
    the write), so that writing the same fact again yields the same key. Each level
    goes through :func:`safe_part`: bounded, and distinct names stay distinct.
    """
    day = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    scope = safe_part(asset) if asset else AGENT_SCOPE
    if asset and scope == AGENT_SCOPE:
        scope = _hashed(asset)  # an asset named like the gateway's own folder
    return (
        f"{safe_part(site)}/{safe_part(agent)}/{kind}/{day:%Y}/{day:%m}/{day:%d}/"
        f"{scope}/{safe_part(name)}"
    )


def iso_ms(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y%m%dT%H%M%S") + (
        f"{ts_ms % 1000:03d}Z"
    )


def json_body(obj: Any) -> bytes:
    # Sorted keys: equal facts give byte-equal bodies, so a re-upload is a true no-op.
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS, default=str)


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def enqueue(
    conn: Connection,
    *,
    key: str,
    kind: str,
    created_ms: int,
    body: bytes | None = None,
    path: str | None = None,
    size_bytes: int | None = None,
    digest: str | None = None,
) -> bool:
    """Add one item to the outbox inside the caller's transaction.

    Either ``body`` (kept inline) or ``path`` (a finished file below
    ``<data_dir>/outbox``, with its ``size_bytes`` and ``digest``). Returns False when
    the key was already there (the same fact written again).
    """
    if (body is None) == (path is None):
        raise ValueError("an outbox item has either an inline body or a file path")
    size = len(body) if body is not None else size_bytes
    if size is None:
        raise ValueError("a file item needs its size")
    result = conn.execute(
        sqlite_insert(t.outbox)
        .values(
            kind=kind,
            idempotency_key=key,
            object_key=key,
            priority=PRIORITY[kind],
            state=PENDING,
            created_ms=created_ms,
            size_bytes=size,
            payload=body,
            path=path,
            sha256=digest if digest is not None else sha256(body or b""),
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
    )
    return bool(result.rowcount)


def enqueue_json(
    conn: Connection,
    *,
    site: str,
    agent: str,
    kind: str,
    ts_ms: int,
    asset: str | None,
    name: str,
    obj: Any,
    created_ms: int | None = None,
) -> str:
    """Enqueue ``obj`` as a JSON object; returns its key."""
    key = item_key(site=site, agent=agent, kind=kind, ts_ms=ts_ms, asset=asset, name=name)
    enqueue(conn, key=key, kind=kind, created_ms=created_ms or now_ms(), body=json_body(obj))
    return key


def alert_transition(
    previous_severity: str | None, previous_closed: bool, severity: str, closed: bool
) -> str | None:
    """The state change an alert write makes: open, escalate, deescalate, close or None."""
    if previous_severity is None:
        return "close" if closed else "open"
    if closed and not previous_closed:
        return "close"
    if closed or previous_closed:
        return None
    if severity == previous_severity:
        return None
    order = ("info", "warning", "critical")
    rank = {s: i for i, s in enumerate(order)}
    return "escalate" if rank.get(severity, 0) > rank.get(previous_severity, 0) else "deescalate"


def record_loss(
    conn: Connection,
    *,
    site: str,
    agent: str,
    kind: str,
    reason: str,
    items: int,
    size_bytes: int,
    first_ms: int | None,
    last_ms: int | None,
    detail: dict[str, Any],
    ts_ms: int | None = None,
) -> int:
    """Write a loss-ledger row and its outbox item (synced like everything else)."""
    ts = ts_ms if ts_ms is not None else now_ms()
    row = {
        "ts_ms": ts,
        "kind": kind,
        "reason": reason,
        "items": items,
        "bytes": size_bytes,
        "first_ms": first_ms,
        "last_ms": last_ms,
        "detail_json": json_body(detail).decode(),
    }
    ledger_id = int(
        conn.execute(insert(t.loss_ledger).values(**row).returning(t.loss_ledger.c.id)).scalar_one()
    )
    enqueue_json(
        conn,
        site=site,
        agent=agent,
        kind=LEDGER,
        ts_ms=ts,
        asset=None,
        name=f"{iso_ms(ts)}-{ledger_id}.json",
        obj={"site": site, "agent": agent, "id": ledger_id, **row, "detail": detail},
        created_ms=ts,
    )
    return ledger_id


def quarantined(conn: Connection, newest: int) -> tuple[int, list[dict[str, Any]]]:
    """How many items the target refused for good, and the ``newest`` of them (kind,
    key, error and since when), newest first."""
    o = t.outbox
    count = conn.execute(
        select(func.count()).select_from(o).where(o.c.state == QUARANTINED)
    ).scalar_one()
    rows = conn.execute(
        select(o.c.kind, o.c.object_key, o.c.last_error, o.c.done_ms)
        .where(o.c.state == QUARANTINED)
        .order_by(o.c.done_ms.desc(), o.c.id.desc())
        .limit(newest)
    ).all()
    items = [
        {"kind": kind, "key": key, "error": error, "since_ms": since}
        for kind, key, error, since in rows
    ]
    return int(count), items


#: Keys per statement when requeueing named items (SQLite bounds bound parameters).
_KEYS_PER_STATEMENT: Final = 500


def requeue_quarantined(conn: Connection, keys: Collection[str] | None = None) -> list[str]:
    """Put quarantined items back in line, all of them or those with the given object
    keys; returns the keys requeued (a key not quarantined is left as it is).

    They are due at once and keep their age, so TTL and the disk budget treat them as
    before; a target that still refuses one sets it aside again.
    """
    o = t.outbox
    back = {"state": PENDING, "next_attempt_ms": 0, "done_ms": None}
    if keys is None:
        chosen = conn.execute(
            update(o).where(o.c.state == QUARANTINED).values(**back).returning(o.c.object_key)
        ).scalars()
        return sorted(str(key) for key in chosen)
    wanted = sorted(set(keys))
    done: list[str] = []
    for start in range(0, len(wanted), _KEYS_PER_STATEMENT):
        batch = wanted[start : start + _KEYS_PER_STATEMENT]
        chosen = conn.execute(
            update(o)
            .where(o.c.state == QUARANTINED, o.c.object_key.in_(batch))
            .values(**back)
            .returning(o.c.object_key)
        ).scalars()
        done += (str(key) for key in chosen)
    return sorted(done)


def get_state(conn: Connection, key: str) -> Any:
    raw = conn.execute(
        select(t.sync_state.c.value_json).where(t.sync_state.c.key == key)
    ).scalar_one_or_none()
    return None if raw is None else orjson.loads(raw)


def put_state(conn: Connection, key: str, value: Any, ts_ms: int | None = None) -> None:
    stmt = sqlite_insert(t.sync_state).values(
        key=key, value_json=orjson.dumps(value).decode(), updated_ms=ts_ms or now_ms()
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["key"],
            set_={"value_json": stmt.excluded.value_json, "updated_ms": stmt.excluded.updated_ms},
        )
    )
