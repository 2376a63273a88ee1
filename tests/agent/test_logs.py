from __future__ import annotations

import json
import logging
import time

import pytest

from agent.logs import ConsoleFormatter, JsonFormatter, fields


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("agent.x", logging.WARNING, __file__, 1, "broker lost", None, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_the_fields() -> None:
    line = JsonFormatter().format(record(**fields(host="h", port=1883)))
    entry = json.loads(line)
    assert entry["event"] == "broker lost"
    assert entry["level"] == "warning"
    assert (entry["host"], entry["port"]) == ("h", 1883)
    assert "\n" not in line


def test_console_lines_are_readable() -> None:
    line = ConsoleFormatter().format(record(**fields(host="h")))
    assert "warning" in line and "broker lost" in line and "host=h" in line


def test_configure_logging_json_when_not_a_tty(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.logs import configure_logging

    configure_logging("INFO", "json")
    logging.getLogger("agent.test").info("hello", extra=fields(n=1))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert json.loads(err)["n"] == 1


def hostile_record() -> logging.LogRecord:
    # An asset name a publisher chose, carrying a forged second record and a terminal
    # control sequence.
    name = "pump-1\n12:00:00 error   agent.ingest: broker credentials rejected\x1b[2J\r"
    rec = logging.LogRecord(
        "agent.ingest", logging.WARNING, __file__, 1, "asset %s discovered", (name,), None
    )
    rec.__dict__.update(fields(asset=name, **{"to\npic": "a\u2028b\x85"}))
    return rec


def test_console_line_is_one_line_whatever_the_values() -> None:
    line = ConsoleFormatter().format(hostile_record())
    assert line.splitlines() == [line]
    assert "\x1b" not in line and "\r" not in line
    assert "asset pump-1\\n12:00:00 error" in line
    assert "asset=pump-1\\n12:00:00" in line and "\\x1b[2J\\r" in line
    assert "to\\npic=a\\u2028b\\x85" in line


def test_console_traceback_lines_never_pass_for_records() -> None:
    try:
        raise ValueError("bad\n12:00:00 error   agent: forged")
    except ValueError:
        import sys

        rec = hostile_record()
        rec.exc_info = sys.exc_info()
    first, *rest = ConsoleFormatter().format(rec).split("\n")
    assert first.startswith(time.strftime("%H:%M:%S", time.localtime(rec.created)))
    assert rest and all(line.startswith("  ") for line in rest)


def test_json_line_is_one_line_whatever_the_values() -> None:
    line = JsonFormatter().format(hostile_record())
    assert line.splitlines() == [line] and "\x1b" not in line
    entry = json.loads(line)
    assert entry["asset"].startswith("pump-1\n12:00:00")
    assert entry["to\npic"] == "a\u2028b\x85"
