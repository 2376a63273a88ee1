"""Structured logging: one line per event, human on a terminal, JSON lines otherwise.

Library code logs through stdlib loggers and attaches fields with
``log.info("broker connected", extra=fields(host=h, port=p))``; the formatter puts
them in the JSON object or after the message.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, Literal

import orjson

_FIELDS = "edgewatch_fields"

# C0 and C1 control characters, DEL, the Unicode line and paragraph separators and the
# bidirectional overrides: what can end a line, move the cursor, restyle a terminal or
# make text read in another order than it is stored.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# orjson already escapes C0; these are the rest of what line splitters and terminals act on.
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: Continuation lines of one record (tracebacks) start with this, never with a time.
CONTINUATION = "  | "


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    # repr() spells the usual ones as people know them: \n, \t, \x1b.
    return repr(char)[1:-1] if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def printable(text: str) -> str:
    """``text`` with control characters as visible escapes (``\\n``, ``\\x1b``).

    For text a publisher chose (asset names, topics, payloads) on its way to a
    terminal or a line-oriented log: it stays one line and cannot drive the terminal.
    """
    return _UNPRINTABLE.sub(_escape_char, text)


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` argument carrying structured fields for one log event."""
    return {_FIELDS: values}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        line = orjson.dumps(entry, default=str).decode()
        return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS level  logger: event key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = getattr(record, _FIELDS, {})
        tail = " ".join(f"{printable(str(k))}={printable(str(v))}" for k, v in extra.items())
        event = printable(record.getMessage())
        line = f"{stamp} {record.levelname.lower():<7} {record.name}: {event}"
        if tail:
            line = f"{line}  {tail}"
        if record.exc_info:
            # A traceback is many lines, and its message may carry publisher text: each
            # line is marked as a continuation so none can pass for a record of its own.
            trace = self.formatException(record.exc_info).split("\n")
            line += "".join(f"\n{CONTINUATION}{printable(t)}" for t in trace)
        return line


def configure_logging(
    level: str = "INFO", fmt: Literal["auto", "json", "console"] = "auto"
) -> None:
    """Install one handler on stderr for the ``agent``, ``models``, ``simulators`` loggers."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else ConsoleFormatter())
    for name in ("agent", "models", "simulators"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


#: How often the event loop's note about callbacks on closed sockets may repeat.
CLOSED_SOCKET_LOG_INTERVAL_S = 60.0
_loop_log = logging.getLogger("agent.loop")
_closed_socket_noted = [0.0]


def loop_exception_handler(loop: Any, context: dict[str, Any]) -> None:
    """The event loop's exception handler: every report becomes one log record of ours.

    asyncio's default handler writes through the ``asyncio`` logger, which nothing of
    ours formats, so a traceback reached the service journal as loose text lines. The
    MQTT client registers socket callbacks from its own thread; when a broker drops the
    connection, one can run after the socket closed (``add_writer`` on fd -1). That is
    expected while the link reconnects, so it is a rate-limited warning, not an error.
    """
    exc = context.get("exception")
    handle = repr(context.get("handle", ""))
    closed_socket = isinstance(exc, ValueError | OSError) and any(
        name in handle for name in ("add_writer", "add_reader", "remove_writer", "remove_reader")
    )
    if closed_socket:
        now = time.monotonic()
        if now - _closed_socket_noted[0] >= CLOSED_SOCKET_LOG_INTERVAL_S:
            _closed_socket_noted[0] = now
            _loop_log.warning(
                "socket callback after the connection closed (ignored while reconnecting)",
                extra=fields(error=repr(exc)),
            )
        return
    _loop_log.error(
        "event loop error",
        exc_info=exc if isinstance(exc, BaseException) else None,
        extra=fields(message=str(context.get("message", ""))),
    )
