"""Generated payloads through the decoder and the live agent; a flood of asset names."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.domain import RejectReason
from agent.errors import PayloadError
from agent.ingest.decode import DecodeLimits, decode_payload
from tests.chaos.conftest import make_agent
from tests.chaos.support import (
    SITE,
    TOPIC,
    Message,
    Report,
    Row,
    Scale,
    count,
    crashed_lines,
    integrity,
    publish_all,
    vm_rss_mb,
)
from tests.e2e.harness import query, wait_until
from tests.support import Broker

pytestmark = pytest.mark.chaos

REASONS = {r.value for r in RejectReason}
NOW_S = time.time()
#: The agent's RSS may grow by at most this much over a flood of new asset names
#: (ingest.max_assets = 200 caps what it holds).
FLOOD_RSS_GROWTH_MB = 60.0

numbers = st.floats() | st.integers() | st.text(max_size=8) | st.none() | st.booleans()
stamps = st.one_of(
    st.integers(int(NOW_S) - 86_400, int(NOW_S) - 3_600),  # plausible: readings
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.text(max_size=30),
    st.just("2026-09-21T14:13:20Z"),
)
documents = st.fixed_dictionaries(
    {
        "ts": stamps | st.lists(stamps, max_size=6),
        "values": st.dictionaries(
            st.sampled_from(["temp_c", "vib_mm_s", "x", "", "\x00"]) | st.text(max_size=6),
            numbers | st.lists(numbers, max_size=6),
            max_size=4,
        )
        | numbers,
    },
    optional={"extra": numbers},
)
#: Well-formed readings too, so that the accepting path is fuzzed as well as the
#: refusing ones (random documents are nearly never valid).
valid_documents = st.fixed_dictionaries(
    {
        "ts": st.integers(int(NOW_S) - 86_400, int(NOW_S) - 3_600),
        "values": st.dictionaries(
            st.sampled_from(["temp_c", "vib_mm_s", "current_a", "flow_m3_h"]),
            st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
            min_size=1,
            max_size=4,
        ),
    }
)
json_like: Any = st.recursive(
    numbers, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner)
)
payloads = st.one_of(
    valid_documents.map(lambda d: json.dumps(d).encode()),
    documents.map(lambda d: json.dumps(d).encode()),
    json_like.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=200),
    documents.map(lambda d: json.dumps(d).encode()[: max(1, len(json.dumps(d)) // 2)]),
)


def verdict(payload: bytes) -> str | None:
    """None for readings, else the reason; anything but PayloadError escapes."""
    try:
        readings = decode_payload(
            "fz", SITE, payload, now_ms=int(time.time() * 1000), limits=DecodeLimits()
        )
    except PayloadError as exc:
        assert exc.reason in REASONS, exc
        return exc.reason
    assert readings, payload
    return None


def generate(n: int) -> list[bytes]:
    """``n`` distinct payloads drawn by hypothesis (what it generates, it keeps)."""
    seen: dict[bytes, None] = {}

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(payloads)
    def draw(payload: bytes) -> None:
        seen.setdefault(payload, None)

    draw()
    return list(seen)


def test_decoder_fuzz_only_readings_or_reasons(scale: Scale, report: Report) -> None:
    crashes: list[str] = []
    kinds: dict[str, int] = {}

    @settings(
        max_examples=scale.decoder_payloads,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(payloads)
    def run(payload: bytes) -> None:
        try:
            got = verdict(payload) or "readings"
        except Exception as exc:  # a crash: recorded, then failed below
            crashes.append(f"{payload!r}: {exc!r}")
            return
        kinds[got] = kinds.get(got, 0) + 1

    run()
    examples = sum(kinds.values()) + len(crashes)
    report.add(
        Row(
            "decoder fuzz (hypothesis)",
            1,
            examples,
            0,
            0,
            len(crashes),
            "n/a",
            notes=", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])),
        )
    )
    assert not crashes, crashes[:5]
    assert examples >= scale.decoder_payloads * 0.9
    assert kinds.get("readings", 0) > 0 and len(kinds) > 4


def test_live_agent_fuzz_each_message_once(
    tmp_path: Path, mqtt_broker: Broker, scale: Scale, report: Report
) -> None:
    generated = generate(scale.live_payloads)
    # One topic each: every message is the first of its asset, so its fate is the
    # decoder's and the topic says which message a row or a dead letter came from.
    messages = [
        Message(TOPIC.format(site=SITE, asset=f"fz-{i}"), p, None) for i, p in enumerate(generated)
    ]
    expected = {m.topic: verdict(m.payload) for m in messages}
    agent = make_agent(tmp_path, mqtt_broker.port, ingest={"max_assets": 100_000})
    db = tmp_path / "data" / "edgewatch.db"
    agent.start()
    publish_all(mqtt_broker.host, mqtt_broker.port, messages)

    def read_topics() -> set[str]:
        return {
            TOPIC.format(site=SITE, asset=name)
            for (name,) in query(
                db,
                "select distinct a.name from reading_blocks r join assets a on a.id = r.asset_id",
            )
        }

    def settled() -> bool:
        return count(db, "dead_letters") + len(read_topics()) >= len(messages)

    wait_until(settled, 120, "every fuzzed message stored or dead-lettered")
    assert agent.process is not None
    crashes = [] if agent.process.poll() is None else ["exited by itself"]
    crashes += crashed_lines(agent)
    assert agent.stop() == 0
    letters = query(db, "select topic, reason from dead_letters")
    lettered = [str(t) for t, _ in letters]
    readings = read_topics()
    both = readings & set(lettered)
    neither = set(expected) - readings - set(lettered)
    repeated = len(lettered) - len(set(lettered))
    wrong = [
        (t, r, expected.get(str(t)))
        for t, r in letters
        if expected.get(str(t)) != r and expected.get(str(t)) not in ("ts_past", "ts_future")
    ]
    wrong += [(t, "readings", expected[t]) for t in readings if expected.get(t) is not None]
    check = integrity(db)
    report.add(
        Row(
            "live agent fuzz",
            1,
            len(messages),
            len(neither),
            len(both) + repeated,
            len(crashes),
            check,
            notes=f"{len(readings):,} with readings, {len(letters):,} dead letters, "
            f"{len(wrong)} verdicts unlike the decoder's",
        )
    )
    assert not neither and not both and repeated == 0, (sorted(neither)[:5], sorted(both)[:5])
    assert not wrong, wrong[:5]
    assert {r for _, r in letters} <= REASONS
    assert not crashes, crashes
    assert check == "ok"


def test_asset_flood_keeps_rss_bounded(
    tmp_path: Path, mqtt_broker: Broker, scale: Scale, report: Report
) -> None:
    agent = make_agent(tmp_path, mqtt_broker.port, ingest={"max_assets": 200})
    db = tmp_path / "data" / "edgewatch.db"
    agent.start()
    assert agent.process is not None
    pid = agent.process.pid
    ts = int(time.time()) - 600

    def flood(first: int, n: int) -> list[Message]:
        return [
            Message(
                TOPIC.format(site=SITE, asset=f"flood-{i:06d}"),
                json.dumps({"ts": ts, "values": {"temp_c": 20.0 + i % 7}}).encode(),
                (f"flood-{i:06d}", ts * 1000),
            )
            for i in range(first, first + n)
        ]

    # Warm-up: the first 300 names fill max_assets and start evicting.
    publish_all(mqtt_broker.host, mqtt_broker.port, flood(0, 300))
    wait_until(lambda: count(db, "readings") >= 300, 60, "the warm-up")
    before = vm_rss_mb(pid)
    peak = before
    total = scale.flood_assets
    for first in range(300, total, 1000):
        batch = flood(first, min(1000, total - first))
        publish_all(mqtt_broker.host, mqtt_broker.port, batch)
        peak = max(peak, vm_rss_mb(pid))
    wait_until(lambda: count(db, "readings") >= total, 120, "every flood reading")
    peak = max(peak, vm_rss_mb(pid))
    crashes = [] if agent.process.poll() is None else ["exited by itself"]
    crashes += crashed_lines(agent)
    assert agent.stop() == 0
    stored = count(db, "readings")
    letters = count(db, "dead_letters")
    check = integrity(db)
    report.add(
        Row(
            "asset flood",
            1,
            total,
            total - stored - letters,
            max(0, stored + letters - total),
            len(crashes),
            check,
            rss=f"{before:.0f} / {peak:.0f} MB (bound +{FLOOD_RSS_GROWTH_MB:.0f} MB)",
            notes=f"{total:,} new asset names, max_assets 200",
        )
    )
    assert stored + letters == total
    assert peak - before < FLOOD_RSS_GROWTH_MB, (before, peak)
    assert not crashes, crashes
    assert check == "ok"
