"""Rows whose text a publisher chose: rich markup, mathtext, control characters.

Asset names, sensor names, topics and payloads all arrive over MQTT, so the
operator tools must show them as text and never interpret them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert

from agent import blocks
from agent import schema as t
from agent.sqlite import open_engine
from tests.agent.seed import HOUR, MIN, NOW, _alert, _dead, _prediction, seeded

__all__ = ["seeded"]  # the fixture, imported for pytest

MATH = "$\\x$"  # mathtext with an unknown command: matplotlib raises while drawing it
NEWLINE = "a\nb"  # a second line that could pass for a row or a log record of its own
MARKUP = "[bold red]x"
CLOSE = "[/]"  # closing a tag never opened: rich raises MarkupError
ESCAPE = "\x1b[2Jwiped"  # a terminal control sequence (clear the screen)
SENSOR = "$\\y$_c"


@pytest.fixture
def hostile(seeded: Path) -> Iterator[Path]:
    """The seeded database plus assets, sensors, payloads and events with hostile text."""
    engine = open_engine(seeded)
    names = {10: MATH, 11: NEWLINE, 12: MARKUP, 13: ESCAPE}
    with engine.begin() as conn:
        conn.execute(
            insert(t.assets),
            [
                {
                    "id": asset_id,
                    "site": "s",
                    "name": name,
                    "first_seen_ms": NOW - 5 * HOUR,
                    "last_seen_ms": NOW - MIN,
                    "state": "alerting" if asset_id == 10 else "healthy",
                    "sensors": f'["{SENSOR.replace(chr(92), chr(92) * 2)}"]',
                }
                for asset_id, name in names.items()
            ],
        )
        conn.execute(
            insert(t.predictions),
            [
                {
                    **_prediction(asset_id, NOW - offset * MIN, score, score > 3, 50.0),
                    "model_version": MATH,
                }
                for asset_id in names
                for offset, score in ((40, 1.0), (20, 4.0))
            ],
        )
        conn.execute(insert(t.alerts), [_alert(10, NOW - 20 * MIN, None, "critical")])
        for asset_id in names:
            blocks.insert_readings(
                conn,
                asset_id,
                [
                    (NOW - offset * MIN, NOW - offset * MIN, {SENSOR: offset + 0.5})
                    for offset in (40, 20)
                ],
            )
        conn.execute(
            insert(t.dead_letters),
            [
                _dead(NOW - 3 * MIN, "invalid_json", MATH, CLOSE.encode()),
                _dead(NOW - 2 * MIN, "invalid_json", NEWLINE, MARKUP.encode()),
                _dead(NOW - MIN, "invalid_json", CLOSE, ESCAPE.encode()),
            ],
        )
        conn.execute(
            insert(t.events),
            [
                {
                    "ts_ms": NOW - MIN,
                    "kind": "window_restart",
                    "level": "warning",
                    "asset_id": 12,
                    "message": f"{CLOSE} gap\n12:00:00 error  agent: forged",
                }
            ],
        )
    engine.dispose()
    yield seeded
