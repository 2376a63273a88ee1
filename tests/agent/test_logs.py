from __future__ import annotations

import json
import logging

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
