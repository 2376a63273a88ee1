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


def test_event_loop_reports_become_our_log_records() -> None:
    import asyncio
    import socket

    from agent import logs

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("agent.loop")
    keep = Keep()
    logger.addHandler(keep)
    logs._closed_socket_noted[0] = 0.0
    try:

        async def main() -> None:
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(logs.loop_exception_handler)
            # What the MQTT client's thread does after a broker dropped the link:
            # register a writer for a socket that is already closed, twice.
            sock = socket.socket()
            sock.close()
            done = asyncio.Event()
            for _ in range(2):
                loop.call_soon(loop.add_writer, sock, lambda: None)
            loop.call_soon(done.set)
            await asyncio.wait_for(done.wait(), 5)

            def boom() -> None:
                raise RuntimeError("a bug")

            after = asyncio.Event()
            loop.call_soon(boom)
            loop.call_soon(after.set)  # callbacks run in order: boom has run by then
            await asyncio.wait_for(after.wait(), 5)

        asyncio.run(main())
    finally:
        logger.removeHandler(keep)
    closed = [r for r in records if r.levelno == logging.WARNING]
    errors = [r for r in records if r.levelno == logging.ERROR]
    assert len(closed) == 1  # rate-limited: the second one is not repeated
    assert len(errors) == 1 and errors[0].exc_info is not None
