"""Drive a stream of :class:`~simulators.payloads.Chunk` s into a message sink.

Shared by the fleet simulator and dataset replay: pacing (real time, sped up, a fixed
message rate or as fast as possible), bad-input injection, a message budget, progress
callbacks and the ground-truth table of what was sent.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from simulators.badinput import BadInputInjector, BadRecord, write_records
from simulators.payloads import Chunk, format_topic
from simulators.publisher import (
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_RECONNECT_TIMEOUT_S,
    Backend,
    MessageSink,
    PublishResult,
    make_publisher,
)

#: ``on_progress(messages_sent_so_far, total_or_None)``.
ProgressCallback = Callable[[int, int | None], None]
#: How often progress is reported at most; more often only costs time.
_PROGRESS_INTERVAL_S = 0.1
#: Sample period assumed for an asset until two of its samples have been seen.
_DEFAULT_PERIOD_S = 1.0


@dataclass(frozen=True, slots=True)
class Series:
    """All samples of one asset: times (epoch s), sensor columns, truth columns."""

    asset: str
    ts: npt.NDArray[np.float64]
    values: dict[str, npt.NDArray[np.float64]]
    truth: dict[str, list[object]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ts.shape[0])


def interleave(series: list[Series], batch: int = 1) -> tuple[Iterator[Chunk], int]:
    """Messages of every asset interleaved in time order, and how many there are.

    A batch goes out when its newest sample exists, so messages are ordered by the
    time of their last sample (ties by position in ``series``).
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    ends: list[float] = []
    owners: list[int] = []
    starts: list[int] = []
    for a, one in enumerate(series):
        n = len(one)
        first = np.arange(0, n, batch)
        last = np.minimum(first + batch, n) - 1
        ends.extend(one.ts[last].tolist())
        owners.extend([a] * len(first))
        starts.extend(first.tolist())
    order = np.lexsort((np.asarray(owners), np.asarray(ends))) if ends else np.array([], int)

    def generate() -> Iterator[Chunk]:
        # Lists once per asset: slicing lists is much cheaper than numpy per message.
        cols = [
            (one.asset, one.ts.tolist(), {k: v.tolist() for k, v in one.values.items()}, one.truth)
            for one in series
        ]
        for i in order.tolist():
            asset, ts, values, truth = cols[owners[i]]
            lo = starts[i]
            hi = lo + batch
            yield Chunk(
                asset=asset,
                ts=ts[lo:hi],
                values={k: v[lo:hi] for k, v in values.items()},
                truth={k: v[lo:hi] for k, v in truth.items()},
                as_batch=batch > 1,
            )

    return generate(), len(ends)


def interleave_lazily(series: Sequence[Iterable[Series]], batch: int = 1) -> Iterator[Chunk]:
    """:func:`interleave` for assets whose series come in pieces, in time order.

    ``series[a]`` yields asset ``a``'s samples a piece at a time (each piece follows
    the one before). Messages come out in the order :func:`interleave` gives the
    whole series, and are the same; only a piece per asset (and less than a batch
    of leftover samples) is held at a time.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    streams = [_asset_messages(a, pieces, batch) for a, pieces in enumerate(series)]
    for _end, _owner, chunk in heapq.merge(*streams):
        yield chunk


def _asset_messages(
    owner: int, pieces: Iterable[Series], batch: int
) -> Iterator[tuple[float, int, Chunk]]:
    """One asset's messages as ``(time of the last sample, owner, chunk)``."""
    asset = ""
    ts: list[float] = []
    values: dict[str, list[float]] = {}
    truth: dict[str, list[object]] = {}

    def message(lo: int, hi: int) -> tuple[float, int, Chunk]:
        chunk = Chunk(
            asset=asset,
            ts=ts[lo:hi],
            values={k: v[lo:hi] for k, v in values.items()},
            truth={k: v[lo:hi] for k, v in truth.items()},
            as_batch=batch > 1,
        )
        return chunk.ts[-1], owner, chunk

    for piece in pieces:
        asset = piece.asset
        ts.extend(piece.ts.tolist())
        for k, v in piece.values.items():
            values.setdefault(k, []).extend(v.tolist())
        for k, t in piece.truth.items():
            truth.setdefault(k, []).extend(t)
        full = len(ts) - len(ts) % batch
        for lo in range(0, full, batch):
            yield message(lo, lo + batch)
        if full:
            del ts[:full]
            for col in values.values():
                del col[:full]
            for labels in truth.values():
                del labels[:full]
    if ts:
        yield message(0, len(ts))


@dataclass(frozen=True, slots=True)
class Pacing:
    """When messages go out.

    ``rate_msg_s`` set: that many messages per second. Otherwise, if ``speedup`` is
    set: data time runs ``speedup`` times faster than the wall clock. Neither: as
    fast as possible.
    """

    speedup: float | None = 1.0
    rate_msg_s: float | None = None

    @classmethod
    def fast(cls) -> Pacing:
        return cls(speedup=None, rate_msg_s=None)

    @property
    def is_fast(self) -> bool:
        return self.speedup is None and self.rate_msg_s is None


@dataclass
class StreamStats:
    """What a stream offered to its sink (the sink's own result says what arrived)."""

    messages: int = 0
    good_messages: int = 0
    bad_messages: int = 0
    readings: int = 0
    refused: int = 0  # the sink would not take them (publisher gave up)
    planned: int | None = None  # good messages the source had, if known
    stopped_early: bool = False  # budget reached or stop requested
    bad_records: list[BadRecord] = field(default_factory=list)


@dataclass
class TruthTable:
    """Ground truth of every good reading sent: asset, ts, seq + per-sample columns."""

    columns: dict[str, list[object]] = field(default_factory=dict)

    def add(self, chunk: Chunk, seq: int) -> None:
        n = len(chunk)
        cols = self.columns
        for name, data in (("asset", [chunk.asset] * n), ("ts", chunk.ts), ("seq", [seq] * n)):
            cols.setdefault(name, []).extend(data)
        for name, values in chunk.truth.items():
            cols.setdefault(name, []).extend(values)

    def frame(self) -> pd.DataFrame:
        if not self.columns:
            return pd.DataFrame({"asset": [], "ts": [], "seq": []})
        return pd.DataFrame(self.columns)

    def write(self, path: str | Path) -> Path:
        """Parquet unless the suffix is ``.csv``."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        frame = self.frame()
        if out.suffix.lower() == ".csv":
            frame.to_csv(out, index=False)
        else:
            frame.to_parquet(out, index=False)
        return out


@dataclass
class RunReport:
    """The outcome of a whole publishing run, as the CLI shows it."""

    publish: PublishResult
    stream: StreamStats
    truth_path: Path | None = None
    bad_record_path: Path | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            **self.publish.as_dict(),
            "messages": self.stream.messages,
            "good_messages": self.stream.good_messages,
            "bad_messages": self.stream.bad_messages,
            "readings": self.stream.readings,
            "planned_messages": self.stream.planned,
            "stopped_early": self.stream.stopped_early,
            "truth": str(self.truth_path) if self.truth_path else None,
            "bad_record": str(self.bad_record_path) if self.bad_record_path else None,
        }


def run_stream(
    chunks: Iterable[Chunk],
    sink: MessageSink,
    *,
    topic_template: str,
    site: str,
    pacing: Pacing,
    bad: BadInputInjector | None = None,
    count: int | None = None,
    total: int | None = None,
    truth: TruthTable | None = None,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> StreamStats:
    """Send every chunk (plus injected bad messages) to ``sink`` in order.

    ``count`` caps the number of messages (good and bad); ``total`` is only passed to
    ``on_progress``. ``stop`` ends the stream early when set.
    """
    stats = StreamStats(planned=total)
    wall0: float | None = None
    data0 = 0.0
    last: dict[str, tuple[float, float | None]] = {}  # asset -> (last ts, period)
    topics: dict[str, str] = {}
    next_progress = 0.0
    expected = min(count, total) if count is not None and total is not None else count or total
    for chunk in chunks:
        if not chunk.ts:
            continue
        if (count is not None and stats.messages >= count) or (stop is not None and stop.is_set()):
            stats.stopped_early = True
            break
        # Pacing: a message goes out when its newest sample exists.
        now = time.monotonic()
        if wall0 is None:
            wall0, data0 = now, chunk.ts[-1]
        if not pacing.is_fast:
            if pacing.rate_msg_s is not None:
                due = wall0 + stats.messages / pacing.rate_msg_s
            else:
                due = wall0 + (chunk.ts[-1] - data0) / (pacing.speedup or 1.0)
            delay = due - now
            if delay > 0 and sink.wait(delay, stop):
                stats.stopped_early = True
                break
        topic = topics.get(chunk.asset)
        if topic is None:
            topic = topics[chunk.asset] = format_topic(topic_template, site, chunk.asset)
        seq = stats.messages
        stats.messages += 1
        if sink.publish(seq, topic, chunk.encode(), len(chunk)):
            stats.good_messages += 1
            stats.readings += len(chunk)
            if truth is not None:
                truth.add(chunk, seq)
        else:
            stats.refused += 1
            if getattr(sink, "gave_up", False):
                # The publisher abandoned the broker: pacing on would only waste time.
                stats.stopped_early = True
                break
        prev = last.get(chunk.asset)
        period = _period(chunk, prev)
        last[chunk.asset] = (chunk.ts[-1], period)
        if bad is not None and (count is None or stats.messages < count):
            message = bad.maybe_bad(
                asset=chunk.asset,
                topic=topic,
                last_ts=chunk.ts[-1],
                period_s=period or _DEFAULT_PERIOD_S,
                last_values={k: v[-1] for k, v in chunk.values.items()},
            )
            if message is not None:
                seq = stats.messages
                stats.messages += 1
                if sink.publish(seq, message.topic, message.payload, 0):
                    stats.bad_messages += 1
                    stats.bad_records.append(bad.note_sent(message, seq))
                else:
                    stats.refused += 1
        if on_progress is not None and (now := time.monotonic()) >= next_progress:
            next_progress = now + _PROGRESS_INTERVAL_S
            on_progress(stats.messages, expected)
    if on_progress is not None:
        on_progress(stats.messages, expected)
    return stats


def _period(chunk: Chunk, prev: tuple[float, float | None] | None) -> float | None:
    if len(chunk.ts) >= 2:
        return (chunk.ts[-1] - chunk.ts[0]) / (len(chunk.ts) - 1)
    if prev is not None:
        step = chunk.ts[-1] - prev[0]
        if step > 0 and math.isfinite(step):
            return step
        return prev[1]
    return None


def finish_run(
    stats: StreamStats,
    result: PublishResult,
    *,
    truth: TruthTable | None,
    truth_path: str | Path | None,
    bad_record_path: str | Path | None,
) -> RunReport:
    """Write the ground truth and bad-input record beside the stream."""
    report = RunReport(result, stats)
    if truth is not None and truth_path is not None:
        report.truth_path = truth.write(truth_path)
    if bad_record_path is not None:
        report.bad_record_path = write_records(bad_record_path, stats.bad_records)
    return report


@dataclass(frozen=True, slots=True)
class BrokerTarget:
    """Where and how a publishing run connects (see :func:`make_publisher`)."""

    host: str
    port: int
    qos: int = 1
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    username: str | None = None
    password: str | None = None
    backend: Backend = "auto"
    reconnect_timeout_s: float = DEFAULT_RECONNECT_TIMEOUT_S


#: Streams a source into a sink, adding what it sends to the truth table if any.
StreamInto = Callable[[MessageSink, "TruthTable | None"], StreamStats]


def publish_to_broker(
    target: BrokerTarget,
    stream: StreamInto,
    *,
    truth_path: str | Path | None,
    bad_record_path: str | Path | None,
) -> RunReport:
    """Connect, run ``stream`` into the publisher, wait for every acknowledgement,
    then write the ground truth and bad-input record beside it."""
    truth = TruthTable() if truth_path else None
    publisher = make_publisher(
        target.host,
        target.port,
        qos=target.qos,
        max_inflight=target.max_inflight,
        username=target.username,
        password=target.password,
        backend=target.backend,
        reconnect_timeout_s=target.reconnect_timeout_s,
    )
    with publisher:
        stats = stream(publisher, truth)
    return finish_run(
        stats,
        publisher.result,
        truth=truth,
        truth_path=truth_path,
        bad_record_path=bad_record_path,
    )
