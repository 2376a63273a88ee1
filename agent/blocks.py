"""Readings stored as compressed per-asset blocks, and the one way to read them back.

A reading used to be one SQLite row (about 320 bytes on disk and 6-8 us of CPU
each). Now each asset's readings of one transaction are one ``reading_blocks`` row:
columnar, compressed, with its time range and count in plain columns so that SQL
can select blocks by asset and time without opening them.

Block layout (``FORMAT_VERSION`` 2), zlib-compressed at level ``ZLIB_LEVEL``:

- header: format version (u8), readings n (u32), sensors k (u32), little-endian;
- timestamps (ms): int64 deltas, the first from 0, bytes shuffled;
- received times (ms): int64 deltas, the first from 0, bytes shuffled;
- values: one column per sensor of the block's sensor set (a ``sensor_sets`` row,
  names in column order), each a code byte and 4 n bytes:

  - code 0-6, *decimal column*: every value is a decimal with that many places
    (``2.35``: 235 at 2 places) whose float32 is the stored value bit for bit (a
    -0.0 is stored as 0, the same number, and reads back as 0.0); the
    scaled integers as deltas (the first from 0), zigzag-coded (0, -1, 1, -2... to
    0, 1, 2, 3...) as u32, bytes shuffled;
  - code 255, *float column*: float32, bytes shuffled.

  A reading that did not carry a sensor has NaN there (a float column): ingest
  refuses non-finite values (``non_finite``), so NaN only ever means "missing".

Sensors mostly send a fixed number of decimals (a PLC's scaled integers, a
transmitter's resolution): as integers, neighbouring values differ in their low bytes
only, where float32's mantissa bits change all over. The pump simulator's readings
take 14.7 bytes a reading in decimal columns against 25.9 as float32 (7 sensors,
blocks of the bench). Either way a block decodes to the same float32 values.

Format 1 (still read): the values are float32 columns alone, no code bytes.

Byte shuffling (all first bytes, then all second bytes...) puts the slowly changing
high bytes of neighbouring values side by side, where zlib finds them.

Values are kept as float32: about 7 significant digits, what the models score on.
Readers get floats back by their shortest decimal form (``41.5``, not
``41.5000000001``), so a value sent with 7 digits or fewer reads back as sent.

Timestamps are unique per asset: :func:`insert_readings` drops a reading whose
(asset, ts) is already stored, which is what makes a redelivered MQTT message
harmless (as the primary key of the old row table did).

Every reader goes through :func:`read_blocks` (columnar) or :func:`iter_readings`
(one reading at a time): they merge blocks whose time ranges overlap (a late reading
stored after its neighbours) into one time-ordered stream.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from sqlalchemy import ColumnElement, Connection, delete, func, insert, or_, select, update

from agent import schema as t
from agent.domain import Batch

FORMAT_VERSION = 2
#: Formats decode() reads: every one ever written.
READABLE_FORMATS = (1, 2)
#: Decimal places a column is tried at, at most (float32 holds about 7 digits).
MAX_DECIMALS = 6
#: A decimal column's scaled values stay within this, so that deltas fit a u32.
_MAX_SCALED = 2**30
_FLOAT_COLUMN = 0xFF
#: Values a column's decimal places are guessed from before the whole is checked.
_GUESS_FROM = 64
#: zlib's fastest level: most of the gain of higher levels at a fraction of the CPU.
ZLIB_LEVEL = 1
#: Readings per block at most: a block is decoded whole, so this bounds what one
#: reader holds in memory, and what a retention trim re-encodes.
MAX_BLOCK_READINGS = 4096
#: Blocks whose data is fetched per statement while streaming.
FETCH_BLOCKS = 64
#: Blocks with fewer readings are merged with their neighbours by compact(): at plant
#: rates a transaction holds a reading or two per asset, and a block that small costs
#: about 120 bytes a reading, against about 20 in a full one.
COMPACT_BELOW = 1024

_HEADER = struct.Struct("<BII")

Row = tuple[int, int, dict[str, float]]

_NEWEST_TS = "SELECT max(last_ts_ms) FROM reading_blocks WHERE asset_id = ?"
_INSERT_BLOCK = (
    "INSERT INTO reading_blocks (asset_id, first_ts_ms, last_ts_ms, count, sensor_set_id, data) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class Block:
    """Readings of one asset, oldest first: ``values[i, j]`` is sensor ``j`` at ``ts_ms[i]``."""

    ts_ms: NDArray[np.int64]
    received_ms: NDArray[np.int64]
    sensors: tuple[str, ...]
    values: NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def take(self, index: Any) -> Block:
        return Block(self.ts_ms[index], self.received_ms[index], self.sensors, self.values[index])

    def with_sensors(self, sensors: tuple[str, ...]) -> Block:
        """The same readings with ``sensors`` as columns (NaN where not carried)."""
        if sensors == self.sensors:
            return self
        out = np.full((len(self), len(sensors)), np.nan, dtype=np.float32)
        where = {name: j for j, name in enumerate(self.sensors)}
        for j, name in enumerate(sensors):
            if name in where:
                out[:, j] = self.values[:, where[name]]
        return Block(self.ts_ms, self.received_ms, sensors, out)

    def column(self, sensor: str) -> NDArray[np.float64] | None:
        """One sensor's values as float64 by their shortest decimal form (NaN: missing)."""
        if sensor not in self.sensors:
            return None
        return exact(self.values[:, self.sensors.index(sensor)])

    def rows(self) -> Iterator[Row]:
        """(ts_ms, received_ms, {sensor: value}) per reading, missing sensors left out."""
        decoded = exact(self.values)
        present = ~np.isnan(decoded)
        names = self.sensors
        for i in range(len(self)):
            row = decoded[i].tolist()
            keep = present[i]
            yield (
                int(self.ts_ms[i]),
                int(self.received_ms[i]),
                {names[j]: row[j] for j in range(len(names)) if keep[j]},
            )


def exact(values: NDArray[np.float32]) -> NDArray[np.float64]:
    """float32 values as the float64 of their shortest decimal form.

    ``float(np.float32(0.1))`` is 0.10000000149011612; a reading sent as 0.1 must
    read back as 0.1 in exports and equality checks.
    """
    return values.astype(str).astype(np.float64)


def _shuffle(arr: NDArray[Any]) -> bytes:
    raw = np.ascontiguousarray(arr).view(np.uint8).reshape(-1, arr.dtype.itemsize)
    return raw.T.tobytes()


def _unshuffle(data: bytes, dtype: Any, count: int) -> NDArray[Any]:
    size = np.dtype(dtype).itemsize
    raw = np.frombuffer(data, dtype=np.uint8).reshape(size, count)
    out: NDArray[Any] = np.ascontiguousarray(raw.T).view(dtype).reshape(count)
    return out


#: Decimal places last found per sensor set (see encode's ``memo``).
PlacesMemo = dict[tuple[str, ...], NDArray[np.int64]]


def encode(block: Block, version: int = FORMAT_VERSION, memo: PlacesMemo | None = None) -> bytes:
    """``block`` in format ``version`` (an older one only to downgrade a database).

    ``memo``: the decimal places of the last block of the same sensors, kept up to date
    by each call: a column that still fits them costs one check instead of a search.
    """
    n, k = len(block), len(block.sensors)
    body = [
        _HEADER.pack(version, n, k),
        _shuffle(np.diff(block.ts_ms, prepend=np.int64(0)).astype("<i8")),
        _shuffle(np.diff(block.received_ms, prepend=np.int64(0)).astype("<i8")),
    ]
    values = np.asarray(block.values, dtype="<f4")
    if version == 1:
        # Column-major: one sensor's neighbouring values are alike.
        body.append(_shuffle(values.T.reshape(-1)))
    elif version == 2:
        hint = None if memo is None else memo.get(block.sensors)
        places = decimal_places(values, hint)
        if memo is not None:
            memo[block.sensors] = places
        body.append(_encode_columns(values, places))
    else:
        raise ValueError(f"reading block format {version} cannot be written")
    return zlib.compress(b"".join(body), ZLIB_LEVEL)


def _encode_columns(values: NDArray[np.float32], places: NDArray[np.int64]) -> bytes:
    """The values section of format 2: per column a code byte and 4 n shuffled bytes
    (all columns at once: a column at a time costs more in numpy calls than in work)."""
    values = np.ascontiguousarray(values)
    n, k = values.shape
    decimal = places >= 0
    words = values.view(np.uint32).copy()  # float columns: their float32 bits
    if decimal.any():
        scale = 10.0 ** places[decimal]
        scaled = np.rint(values[:, decimal].astype(np.float64) * scale).astype(np.int64)
        steps = np.diff(scaled, axis=0, prepend=np.zeros((1, scaled.shape[1]), np.int64))
        words[:, decimal] = ((steps << 1) ^ (steps >> 63)).astype(np.uint32)
    out = np.empty((k, 1 + 4 * n), dtype=np.uint8)
    out[:, 0] = np.where(decimal, places, _FLOAT_COLUMN)
    # (k, n) words -> per column its first bytes, then its second bytes... (shuffled)
    out[:, 1:] = (
        np.ascontiguousarray(words.T, dtype="<u4")
        .view(np.uint8)
        .reshape(k, n, 4)
        .transpose(0, 2, 1)
        .reshape(k, 4 * n)
    )
    return out.tobytes()


def _decode_columns(raw: bytes, at: int, n: int, k: int) -> NDArray[np.float32]:
    section = np.frombuffer(raw, dtype=np.uint8, count=k * (1 + 4 * n), offset=at)
    section = section.reshape(k, 1 + 4 * n)
    codes = section[:, 0]
    words = (
        np.ascontiguousarray(section[:, 1:].reshape(k, 4, n).transpose(0, 2, 1))
        .view("<u4")
        .reshape(k, n)
        .T
    )
    columns = np.ascontiguousarray(words).view(np.float32).copy()
    decimal = codes != _FLOAT_COLUMN
    if decimal.any():
        zigzag = words[:, decimal].astype(np.int64)
        scaled = np.cumsum((zigzag >> 1) ^ -(zigzag & 1), axis=0)
        columns[:, decimal] = (scaled / 10.0 ** codes[decimal].astype(np.float64)).astype(
            np.float32
        )
    return columns


def decimal_places(
    values: NDArray[np.float32], hint: NDArray[np.int64] | None = None
) -> NDArray[np.int64]:
    """Per column of ``values`` (readings x sensors), the fewest decimal places (at
    most MAX_DECIMALS) at which every value is a decimal whose float32 is the value
    (bit for bit, but -0.0 makes 0.0), as decode() makes it back from an integer; -1
    where there are none (a value missing, too large to scale, or not such a decimal).

    ``hint``: places found for earlier values of the same sensors. A column that fits
    its hint keeps it, found with one check (it may fit fewer places now: its
    integers are then a little larger than they need be, never wrong).
    """
    values = np.ascontiguousarray(values)
    n, k = values.shape
    found = np.full(k, -1, dtype=np.int64)
    if not n:
        return found
    if hint is not None and hint.shape == (k,):
        trusted = np.flatnonzero(hint >= 0)
        if len(trusted):
            scales = 10.0 ** hint[trusted].astype(np.float64)
            fit = _fits(values[:, trusted], scales)
            found[trusted[fit]] = hint[trusted[fit]]
        rest = np.flatnonzero(found < 0)
        if len(rest):
            found[rest] = decimal_places(values[:, rest])
        return found
    # Guessed on the first values at every number of places at once, then checked on
    # all; a column whose guess fails the check is tried on from there on its own.
    head = values[:_GUESS_FROM]
    scales = 10.0 ** np.arange(MAX_DECIMALS + 1, dtype=np.float64)
    fits = _fits(head[None, :, :], scales[:, None, None])  # (places, columns)
    guessed = np.asarray(fits.any(axis=0), dtype=np.bool_)
    found[guessed] = fits.argmax(axis=0)[guessed]
    if n <= _GUESS_FROM:
        return found
    sure: NDArray[np.bool_] = guessed.copy()
    sure[guessed] = _fits(values[:, guessed], scales[found[guessed]])
    for j in np.flatnonzero(guessed & ~sure):
        start = int(found[j]) + 1
        found[j] = -1
        for places in range(start, MAX_DECIMALS + 1):
            if _fits(values[:, j : j + 1], scales[places : places + 1])[0]:
                found[j] = places
                break
    return found


def _fits(values: NDArray[np.float32], scale: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Whether each column of ``values`` (readings on the second-to-last axis) is made
    back bit for bit from integers at ``scale`` (broadcast against ``values``)."""
    with np.errstate(over="ignore", invalid="ignore"):  # huge values: not decimals
        scaled = np.multiply(values, scale, dtype=np.float64)
        np.rint(scaled, out=scaled)
        small = np.abs(scaled).max(axis=-2) < _MAX_SCALED  # False for NaN too
        np.divide(scaled, scale, out=scaled)
    # Equal as numbers: the same float32 bits, but for -0.0, which reads back as 0.0
    # (the same number; NaN equals nothing, so a missing value keeps floats).
    same = (scaled.astype(np.float32) == values).all(axis=-2)
    result: NDArray[np.bool_] = small & same
    return result


def format_of(data: bytes) -> int:
    """The format version of an encoded block."""
    version: int = zlib.decompressobj().decompress(data, 1)[0]
    return version


def decode(data: bytes, sensors: Sequence[str]) -> Block:
    raw = zlib.decompress(data)
    version, n, k = _HEADER.unpack_from(raw)
    if version not in READABLE_FORMATS or k != len(sensors):
        raise ValueError(f"reading block format {version} with {k} sensors is not readable here")
    at = _HEADER.size
    ts = np.cumsum(_unshuffle(raw[at : at + 8 * n], "<i8", n)).astype(np.int64)
    at += 8 * n
    received = np.cumsum(_unshuffle(raw[at : at + 8 * n], "<i8", n)).astype(np.int64)
    at += 8 * n
    if version == 1:
        values = _unshuffle(raw[at : at + 4 * n * k], "<f4", n * k).reshape(k, n).T
        return Block(ts, received, tuple(sensors), values.astype(np.float32))
    columns = _decode_columns(raw, at, n, k)
    return Block(ts, received, tuple(sensors), columns)


def from_rows(rows: Sequence[Row]) -> Block:
    """A block of ``rows`` in the given order; sensors are the union of their names, sorted."""
    return from_columns([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def from_columns(
    ts_ms: Sequence[int], received_ms: Sequence[int], values: Sequence[dict[str, float]]
) -> Block:
    """A block of readings given as columns, in the given order (see from_rows)."""
    n = len(values)
    names = tuple(values[0]) if values else ()
    if all(tuple(v) == names for v in values):
        # The usual case, one sensor set in one key order: no per-value Python loop.
        order = sorted(range(len(names)), key=names.__getitem__)
        sensors = tuple(names[j] for j in order)
        matrix = np.array([list(v.values()) for v in values], dtype=np.float32)
        matrix = matrix.reshape(n, len(names))
        columns = matrix if order == list(range(len(names))) else matrix[:, order]
    else:
        sensors = tuple(sorted({name for v in values for name in v}))
        column = {name: j for j, name in enumerate(sensors)}
        columns = np.full((n, len(sensors)), np.nan, dtype=np.float32)
        for i, v in enumerate(values):
            for name, x in v.items():
                columns[i, column[name]] = x
    ts = np.asarray(ts_ms, dtype=np.int64).reshape(n)
    received = np.asarray(received_ms, dtype=np.int64).reshape(n)
    return Block(ts, received, sensors, columns)


def from_batch(batch: Batch, received_ms: int) -> Block:
    """A block of a batch payload's readings (columns as they are: no Reading made)."""
    names = batch.names
    order = sorted(range(len(names)), key=names.__getitem__)
    n = len(batch)
    return Block(
        batch.ts_ms,
        np.full(n, received_ms, dtype=np.int64),
        tuple(names[j] for j in order),
        batch.columns[order].T.astype(np.float32),
    )


def concat(blocks: Sequence[Block]) -> Block:
    """One block of ``blocks`` sorted by time (stable: equal times keep their order)."""
    if len(blocks) == 1:
        return blocks[0]
    names: dict[str, None] = {}
    for b in blocks:
        names.update(dict.fromkeys(b.sensors))
    sensors = (
        tuple(names)
        if all(b.sensors == blocks[0].sensors for b in blocks)
        else tuple(sorted(names))
    )
    aligned = [b.with_sensors(sensors) for b in blocks]
    ts = np.concatenate([b.ts_ms for b in aligned])
    order = np.argsort(ts, kind="stable")
    return Block(
        ts[order],
        np.concatenate([b.received_ms for b in aligned])[order],
        sensors,
        np.concatenate([b.values for b in aligned])[order],
    )


# -- sensor sets ---------------------------------------------------------------------


class SensorSets:
    """Sensor-set ids and names, cached (a set is never changed once written)."""

    def __init__(self) -> None:
        self._names: dict[int, tuple[str, ...]] = {}
        self._ids: dict[tuple[str, ...], int] = {}
        #: The writer's memo of decimal places per sensor set (see encode).
        self.places: PlacesMemo = {}

    def names(self, conn: Connection, set_id: int) -> tuple[str, ...]:
        found = self._names.get(set_id)
        if found is None:
            text = conn.execute(
                select(t.sensor_sets.c.names_json).where(t.sensor_sets.c.id == set_id)
            ).scalar_one()
            found = tuple(str(x) for x in orjson.loads(text))
            self._names[set_id] = found
        return found

    def id_of(self, conn: Connection, sensors: tuple[str, ...]) -> int:
        found = self._ids.get(sensors)
        if found is not None:
            return found
        text = orjson.dumps(list(sensors)).decode()
        set_id = conn.execute(
            select(t.sensor_sets.c.id).where(t.sensor_sets.c.names_json == text)
        ).scalar_one_or_none()
        if set_id is None:
            set_id = conn.execute(
                insert(t.sensor_sets).values(names_json=text).returning(t.sensor_sets.c.id)
            ).scalar_one()
        # Ids are remembered only for sets seen committed or made here; a rolled-back
        # transaction must forget them (see forget()).
        self._ids[sensors] = int(set_id)
        self._names[int(set_id)] = sensors
        return int(set_id)

    def forget(self) -> None:
        self._names.clear()
        self._ids.clear()


# -- writing -------------------------------------------------------------------------


def _stored_ts(conn: Connection, sets: SensorSets, asset_id: int, lo: int, hi: int) -> set[int]:
    found: set[int] = set()
    for block in read_blocks(conn, asset_id, lo, hi + 1, sets=sets):
        found.update(block.ts_ms.tolist())
    return found


def insert_readings(
    conn: Connection, asset_id: int, rows: Sequence[Row], sets: SensorSets | None = None
) -> int:
    """Store one asset's readings (ts_ms, received_ms, values); see insert_block."""
    if not rows:
        return 0
    return insert_block(conn, asset_id, from_rows(rows), sets)


def insert_block(
    conn: Connection,
    asset_id: int,
    block: Block,
    sets: SensorSets | None = None,
    newest: NewestStored | None = None,
) -> int:
    """Store one asset's readings in blocks; returns how many were new. A reading whose
    timestamp is stored already, or repeated in ``block``, is left out (the first one
    stays): redeliveries change nothing.

    Readings newer than the asset's newest stored one (the normal case) need no look
    at stored data; older ones are checked against the blocks that cover them.
    ``newest``: the caller's memory of that newest time, for the only writer of new
    readings (see :class:`NewestStored`).
    """
    if not len(block):
        return 0
    sets = sets if sets is not None else SensorSets()
    high = newest.get(conn, asset_id) if newest is not None else _newest_ts(conn, asset_id)
    if newest is not None:
        newest.saw(asset_id, int(block.ts_ms.max()))
    ts = block.ts_ms
    if np.any(ts[1:] <= ts[:-1]):
        # Stable, so that of equal times the first one is kept.
        block = block.take(np.argsort(ts, kind="stable"))
        ts = block.ts_ms
        first = np.ones(len(ts), dtype=bool)
        first[1:] = ts[1:] != ts[:-1]
        if not first.all():
            block = block.take(first)
            ts = block.ts_ms
    if high is not None and int(ts[0]) <= int(high):
        old = ts[ts <= int(high)]
        stored = _stored_ts(conn, sets, asset_id, int(old[0]), int(old[-1]))
        if stored:
            block = block.take(~np.isin(ts, np.fromiter(stored, dtype=np.int64)))
    if not len(block):
        return 0
    write_blocks(conn, asset_id, block, sets)
    return len(block)


def _newest_ts(conn: Connection, asset_id: int) -> int | None:
    # Plain SQL on the hot path: building the statement would cost more than running it.
    high = conn.exec_driver_sql(_NEWEST_TS, (asset_id,)).scalar()
    return None if high is None else int(high)


class NewestStored:
    """Each asset's newest stored reading time, as its only writer of new readings
    knows it: asked of the database once per asset, then kept up to date in memory.

    It may only run ahead of the database, never behind: a transaction rolled back
    or readings dropped by retention leave it higher than what is stored, which costs
    a look at stored blocks for readings that are not new, never a duplicate. Only
    readings inserted by someone else (nothing does) could make it fall behind.
    """

    def __init__(self) -> None:
        self._newest: dict[int, int | None] = {}

    def get(self, conn: Connection, asset_id: int) -> int | None:
        if asset_id not in self._newest:
            self._newest[asset_id] = _newest_ts(conn, asset_id)
        return self._newest[asset_id]

    def saw(self, asset_id: int, ts_ms: int) -> None:
        known = self._newest.get(asset_id)
        if known is None or ts_ms > known:
            self._newest[asset_id] = ts_ms

    def forget(self, asset_id: int) -> None:
        self._newest.pop(asset_id, None)


def write_blocks(conn: Connection, asset_id: int, block: Block, sets: SensorSets) -> None:
    """Insert ``block`` (time-ordered) as rows of at most MAX_BLOCK_READINGS readings."""
    set_id = sets.id_of(conn, block.sensors)
    rows: list[tuple[int, int, int, int, int, bytes]] = []
    for start in range(0, len(block), MAX_BLOCK_READINGS):
        part = block.take(slice(start, start + MAX_BLOCK_READINGS))
        rows.append(
            (
                asset_id,
                int(part.ts_ms[0]),
                int(part.ts_ms[-1]),
                len(part),
                set_id,
                encode(part, memo=sets.places),
            )
        )
    if rows:
        conn.exec_driver_sql(_INSERT_BLOCK, rows)


def trim_before(conn: Connection, cutoff_ms: int, limit: int) -> tuple[int, int]:
    """Remove readings older than ``cutoff_ms`` from at most ``limit`` blocks: whole
    blocks when all of theirs are, else the block is rewritten with the rest.
    Returns (blocks touched, readings removed)."""
    b = t.reading_blocks
    found = conn.execute(
        select(b.c.id, b.c.asset_id, b.c.last_ts_ms, b.c.count, b.c.sensor_set_id, b.c.data)
        .where(b.c.first_ts_ms < cutoff_ms)
        .order_by(b.c.first_ts_ms)
        .limit(limit)
    ).all()
    sets = SensorSets()
    removed = 0
    whole = [row.id for row in found if int(row.last_ts_ms) < cutoff_ms]
    removed += sum(int(row[3]) for row in found if int(row.last_ts_ms) < cutoff_ms)
    for start in range(0, len(whole), 500):
        conn.execute(delete(b).where(b.c.id.in_(whole[start : start + 500])))
    for row in found:
        if int(row.last_ts_ms) < cutoff_ms:
            continue
        block = decode(row.data, sets.names(conn, int(row.sensor_set_id)))
        rest = block.take(block.ts_ms >= cutoff_ms)
        removed += len(block) - len(rest)
        conn.execute(
            update(b)
            .where(b.c.id == row.id)
            .values(first_ts_ms=int(rest.ts_ms[0]), count=len(rest), data=encode(rest))
        )
    return len(found), removed


def compact(conn: Connection, limit: int) -> tuple[int, int]:
    """Merge runs of an asset's small blocks (fewer than COMPACT_BELOW readings) into
    blocks of up to MAX_BLOCK_READINGS, looking at ``limit`` small blocks at most.
    Returns (blocks merged away, blocks written). Readings, their times and values are
    unchanged; blocks are never appended to, so any of them may be merged any time."""
    b = t.reading_blocks
    found = conn.execute(
        select(b.c.id, b.c.asset_id, b.c.count)
        .where(b.c.count < COMPACT_BELOW)
        .order_by(b.c.asset_id, b.c.first_ts_ms, b.c.id)
        .limit(limit)
    ).all()
    sets = SensorSets()
    removed = written = 0
    group: list[Any] = []

    def flush() -> None:
        nonlocal removed, written
        if len(group) > 1:
            # Merged as they are when deleted, not as they were read: the read came
            # before this transaction held the write lock (its first DELETE takes it),
            # and the disk budget or retention may have dropped or trimmed a block
            # since (merging the old copy would bring its readings back).
            taken = conn.execute(
                delete(b)
                .where(b.c.id.in_([r.id for r in group]))
                .returning(b.c.first_ts_ms, b.c.sensor_set_id, b.c.data)
            ).all()
            if taken:
                parts = sorted(taken, key=lambda r: int(r.first_ts_ms))
                merged = concat(
                    [decode(r.data, sets.names(conn, int(r.sensor_set_id))) for r in parts]
                )
                write_blocks(conn, int(group[0].asset_id), merged, sets)
                removed += len(taken)
                written += 1
        group.clear()

    for row in found:
        if group and (
            row.asset_id != group[0].asset_id
            or sum(int(r[2]) for r in group) + int(row[2]) > MAX_BLOCK_READINGS
        ):
            flush()
        group.append(row)
    flush()
    return removed, written


# -- reading -------------------------------------------------------------------------


def _blocks_in_range(
    conn: Connection,
    asset_id: int | None,
    since_ms: int | None,
    until_ms: int | None,
    newest_first: bool,
    sets: SensorSets,
) -> Iterator[tuple[int, int, int, Block]]:
    """(asset_id, first_ts_ms, last_ts_ms, block) of the blocks overlapping the range,
    by first time (oldest first) or by last time (newest first)."""
    b = t.reading_blocks
    meta = select(b.c.id, b.c.asset_id, b.c.first_ts_ms, b.c.last_ts_ms, b.c.sensor_set_id)
    first: ColumnElement[int] = b.c.first_ts_ms
    if asset_id is not None:
        meta = meta.where(b.c.asset_id == asset_id)
        # One asset's blocks are found on the (last time, asset) index, which skips
        # the other assets' blocks without opening their rows. "+ 0" keeps SQLite
        # (which has no statistics) from walking the first-time index from the
        # oldest block of all for the sake of its order.
        first = b.c.first_ts_ms + 0
    if since_ms is not None:
        meta = meta.where(b.c.last_ts_ms >= since_ms)
    if until_ms is not None:
        meta = meta.where(first < until_ms)
    meta = meta.order_by(
        *((b.c.last_ts_ms.desc(), b.c.id.desc()) if newest_first else (first, b.c.id))
    )
    # The sorted list holds no blobs; the blobs are fetched a few blocks at a time,
    # all in one snapshot (see _snapshot).
    with _snapshot(conn):
        result = conn.execution_options(stream_results=True, yield_per=1000).execute(meta)
        try:
            while True:
                chunk = result.fetchmany(FETCH_BLOCKS)
                if not chunk:
                    return
                ids = [row.id for row in chunk]
                data = dict(conn.execute(select(b.c.id, b.c.data).where(b.c.id.in_(ids))).all())
                for row in chunk:
                    names = sets.names(conn, int(row.sensor_set_id))
                    yield (
                        int(row.asset_id),
                        int(row.first_ts_ms),
                        int(row.last_ts_ms),
                        decode(data[row.id], names),
                    )
        finally:
            result.close()


@contextlib.contextmanager
def _snapshot(conn: Connection) -> Iterator[None]:
    """Hold one read snapshot of the database for the statements inside.

    pysqlite begins a transaction only before a write, so a reader's statements each
    see the database as of their own start: a block listed by the first could be
    merged or trimmed away (and committed by the agent) before the second fetches
    its data. A savepoint outside a transaction is SQLite's deferred BEGIN; inside
    one (a writer's) it only nests. Nothing may be written on ``conn`` while a
    reader of this module is part-way through: the release would commit it.
    """
    dbapi = conn.connection.dbapi_connection
    outermost = dbapi is not None and not getattr(dbapi, "in_transaction", True)
    if not outermost:
        yield
        return
    conn.exec_driver_sql("SAVEPOINT edgewatch_blocks_read")
    try:
        yield
    finally:
        # A reader abandoned part-way and collected after its connection committed or
        # rolled back has no savepoint left to release.
        if getattr(dbapi, "in_transaction", False):
            conn.exec_driver_sql("RELEASE edgewatch_blocks_read")


def read_blocks(
    conn: Connection,
    asset_id: int,
    since_ms: int | None = None,
    until_ms: int | None = None,
    *,
    newest_first: bool = False,
    sets: SensorSets | None = None,
) -> Iterator[Block]:
    """The asset's readings in ``[since_ms, until_ms)`` as blocks in time order
    (newest first: each block's readings newest first too). Blocks whose time ranges
    overlap come out merged; memory stays at about the blocks that overlap."""
    for _, block in _merged(conn, asset_id, since_ms, until_ms, newest_first, sets):
        yield block


def read_all_blocks(
    conn: Connection,
    since_ms: int | None = None,
    until_ms: int | None = None,
    *,
    newest_first: bool = False,
) -> Iterator[tuple[NDArray[np.int64], Block]]:
    """Every asset's readings in the range as (asset ids, block) in time order."""
    return _merged(conn, None, since_ms, until_ms, newest_first, None)


def _merged(
    conn: Connection,
    asset_id: int | None,
    since_ms: int | None,
    until_ms: int | None,
    newest_first: bool,
    sets: SensorSets | None,
) -> Generator[tuple[NDArray[np.int64], Block], None, None]:
    sets = sets if sets is not None else SensorSets()
    pending: list[tuple[NDArray[np.int64], Block]] = []

    def flush(bound: int | None) -> Iterator[tuple[NDArray[np.int64], Block]]:
        """Pending readings that no later block can precede (all of them if None)."""
        if not pending:
            return
        owners = np.concatenate([o for o, _ in pending])
        merged = concat([blk for _, blk in pending]) if len(pending) > 1 else pending[0][1]
        if len(pending) > 1:
            order = np.argsort(np.concatenate([blk.ts_ms for _, blk in pending]), kind="stable")
            owners = owners[order]
        pending.clear()
        if bound is None:
            ready = np.ones(len(merged), dtype=bool)
        elif newest_first:
            ready = merged.ts_ms > bound
        else:
            ready = merged.ts_ms < bound
        out, rest = merged.take(ready), merged.take(~ready)
        if len(rest):
            pending.append((owners[~ready], rest))
        if len(out):
            if newest_first:
                out = out.take(slice(None, None, -1))
                yield owners[ready][::-1], out
            else:
                yield owners[ready], out

    for owner, first, last, block in _blocks_in_range(
        conn, asset_id, since_ms, until_ms, newest_first, sets
    ):
        yield from flush(last if newest_first else first)
        keep = np.ones(len(block), dtype=bool)
        if since_ms is not None:
            keep &= block.ts_ms >= since_ms
        if until_ms is not None:
            keep &= block.ts_ms < until_ms
        if not keep.all():
            block = block.take(keep)
        if len(block):
            pending.append((np.full(len(block), owner, dtype=np.int64), block))
    yield from flush(None)


def iter_readings(
    conn: Connection,
    asset_id: int,
    since_ms: int | None = None,
    until_ms: int | None = None,
    *,
    newest_first: bool = False,
) -> Iterator[Row]:
    """The asset's readings in ``[since_ms, until_ms)`` one at a time, in time order:
    (ts_ms, received_ms, {sensor: value})."""
    for block in read_blocks(conn, asset_id, since_ms, until_ms, newest_first=newest_first):
        yield from block.rows()


def first_ts(
    conn: Connection, asset_id: int, since_ms: int | None, until_ms: int | None
) -> int | None:
    """The time of the asset's oldest reading in ``[since_ms, until_ms)``, or None."""
    stream = _merged(conn, asset_id, since_ms, until_ms, False, None)
    try:
        for _, block in stream:
            return int(block.ts_ms[0])
        return None
    finally:
        stream.close()


def stored_values(conn: Connection, asset_id: int, ts_ms: int) -> dict[str, float] | None:
    """The values stored for the asset at ``ts_ms``, or None."""
    stream = _merged(conn, asset_id, ts_ms, ts_ms + 1, False, None)
    try:
        for _, block in stream:
            return next(block.rows())[2]
        return None
    finally:
        stream.close()


def count_readings(
    conn: Connection,
    asset_ids: Iterable[int] | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> int:
    """How many readings are stored (of ``asset_ids``, in the range): block counts,
    opening only the blocks that straddle the range's ends."""
    b = t.reading_blocks
    where: list[ColumnElement[bool]] = []
    if asset_ids is not None:
        where.append(b.c.asset_id.in_(list(asset_ids)))
    inside = list(where)
    if since_ms is not None:
        where.append(b.c.last_ts_ms >= since_ms)
        inside.append(b.c.first_ts_ms >= since_ms)
    if until_ms is not None:
        where.append(b.c.first_ts_ms < until_ms)
        inside.append(b.c.last_ts_ms < until_ms)
    total = int(
        conn.execute(select(func.coalesce(func.sum(b.c.count), 0)).where(*inside)).scalar_one()
    )
    if since_ms is None and until_ms is None:
        return total
    edges = select(b.c.sensor_set_id, b.c.data).where(*where)
    straddle: list[ColumnElement[bool]] = []
    if since_ms is not None:
        straddle.append(b.c.first_ts_ms < since_ms)
    if until_ms is not None:
        straddle.append(b.c.last_ts_ms >= until_ms)
    sets = SensorSets()
    for set_id, data in conn.execute(edges.where(or_(*straddle))):
        block = decode(data, sets.names(conn, int(set_id)))
        keep = np.ones(len(block), dtype=bool)
        if since_ms is not None:
            keep &= block.ts_ms >= since_ms
        if until_ms is not None:
            keep &= block.ts_ms < until_ms
        total += int(keep.sum())
    return total


def newest_sensors(conn: Connection, asset_id: int) -> tuple[str, ...]:
    """The sensor names of the asset's newest block (none stored: empty)."""
    b = t.reading_blocks
    set_id = conn.execute(
        select(b.c.sensor_set_id)
        .where(b.c.asset_id == asset_id)
        .order_by(b.c.last_ts_ms.desc())
        .limit(1)
    ).scalar_one_or_none()
    return () if set_id is None else SensorSets().names(conn, int(set_id))


__all__ = [
    "FORMAT_VERSION",
    "MAX_BLOCK_READINGS",
    "Block",
    "SensorSets",
    "compact",
    "concat",
    "count_readings",
    "decode",
    "encode",
    "exact",
    "first_ts",
    "from_columns",
    "from_rows",
    "insert_block",
    "insert_readings",
    "iter_readings",
    "newest_sensors",
    "read_all_blocks",
    "read_blocks",
    "stored_values",
    "trim_before",
    "write_blocks",
]
