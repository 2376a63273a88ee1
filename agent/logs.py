"""Structured logging: one line per event, human on a terminal, JSON lines otherwise.

Library code logs through stdlib loggers and attaches fields with
``log.info("broker connected", extra=fields(host=h, port=p))``; the formatter puts
them in the JSON object or after the message.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal

import orjson

_FIELDS = "edgewatch_fields"


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
        return orjson.dumps(entry, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS level  logger: event key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = getattr(record, _FIELDS, {})
        tail = " ".join(f"{k}={v}" for k, v in extra.items())
        line = f"{stamp} {record.levelname.lower():<7} {record.name}: {record.getMessage()}"
        if tail:
            line = f"{line}  {tail}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
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
