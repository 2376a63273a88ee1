"""One log line per kind of failure, not one per pass.

A duty that fails the same way on every pass (an asset whose export cannot be
written, a database that stays locked) would otherwise fill the journal with the
same traceback every minute. Each (duty, subject, error type) is logged once with
its traceback; a success of that duty and subject logs that it recovered.
"""

from __future__ import annotations

import logging

from agent.logs import fields


class FailureLog:
    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._seen: set[tuple[str, str, str]] = set()
        #: Failures by (duty, subject), counted even when not logged again.
        self.counts: dict[tuple[str, str], int] = {}

    def failed(self, duty: str, exc: BaseException, subject: str = "") -> None:
        key = (duty, subject, type(exc).__name__)
        self.counts[(duty, subject)] = self.counts.get((duty, subject), 0) + 1
        if key in self._seen:
            return
        self._seen.add(key)
        self.logger.error(
            f"{duty} failed; the other duties go on, retried every pass",
            exc_info=exc,
            extra=fields(duty=duty, subject=subject or None, error=str(exc)[:500]),
        )

    def succeeded(self, duty: str, subject: str = "") -> None:
        if self.counts.pop((duty, subject), None) is None:
            return
        self._seen = {k for k in self._seen if k[:2] != (duty, subject)}
        self.logger.info(f"{duty} works again", extra=fields(duty=duty, subject=subject or None))
