"""The ingest stage: MQTT messages in, :class:`~agent.domain.Inbound` objects out."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Final, Protocol

from agent.domain import Inbound, RejectReason, dead_letter
from agent.errors import PayloadError
from agent.logs import fields
from agent.metrics import Metrics
from agent.profiles import Profiles

from .decode import DecodeLimits, decode_payload
from .link import RawMessage
from .topics import TopicMatcher

log = logging.getLogger(__name__)

_DECODER_FAILURE_LOG_INTERVAL_S: Final = 60.0
_LOG_TOPIC_CHARS: Final = 200


class MessageSource(Protocol):
    """What the subscriber needs from the link."""

    def messages(self) -> AsyncGenerator[RawMessage, None]: ...


class Subscriber:
    """Decodes every message into an :class:`Inbound` and puts it on ``out``.

    ``await out.put`` is the backpressure: while the queue is full no message is
    taken, none is acknowledged, and the broker stops sending once Receive Maximum
    messages are in flight. Nothing is acknowledged here; the runtime acks each
    ``Inbound.ref`` once what it produced (readings or dead letter) is committed.
    """

    def __init__(
        self,
        link: MessageSource,
        matcher: TopicMatcher,
        limits: DecodeLimits,
        out: asyncio.Queue[Inbound],
        metrics: Metrics,
        dead_letter_max_bytes: int,
        profiles: Profiles | None = None,
    ) -> None:
        self._profiles = profiles
        self._link = link
        self._matcher = matcher
        self._limits = limits
        self._out = out
        self._metrics = metrics
        self._dead_letter_max_bytes = dead_letter_max_bytes
        self._stopping = False
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self._decoder_failures = 0
        self._decoder_failure_logged_at = -math.inf

    def stop(self) -> None:
        """Stop taking messages; what is already on ``out`` stays there to be drained.

        A message being handed over when this is called is still put on ``out``.
        """
        self._stopping = True
        task = self._task
        if task is not None and not task.done() and not self._busy:
            task.cancel(msg="subscriber stop")

    async def run(self) -> None:
        """Until cancelled or :meth:`stop`; never raises because of a message."""
        self._task = asyncio.current_task()
        try:
            async with aclosing(self._link.messages()) as messages:
                async for message in messages:
                    self._busy = True
                    inbound = self.handle(message)
                    await self._out.put(inbound)
                    self._busy = False
                    if self._stopping:
                        return
        except asyncio.CancelledError:
            task = self._task
            # Our own stop() cancel ends run() normally; any other cancel propagates.
            if self._stopping and task is not None and task.cancelling() == 1:
                task.uncancel()
                return
            raise
        finally:
            self._busy = False

    def handle(self, message: RawMessage) -> Inbound:
        """One message to one Inbound; pure apart from the metrics."""
        metrics = self._metrics
        metrics.messages_received += 1
        received_ms = message.received_ms
        asset: str | None = None
        try:
            asset = self._matcher.asset_of(message.topic)
            readings = decode_payload(
                asset,
                self._matcher.site,
                message.payload,
                now_ms=received_ms,
                limits=self._limits,
                rename=None if self._profiles is None else self._profiles.renames(asset),
            )
        except PayloadError as exc:
            return self._reject(message, exc, asset)
        except Exception as exc:  # no input may stop ingest
            self._log_decoder_failure(message)
            return self._reject(
                message, PayloadError(RejectReason.SCHEMA, f"decoder error: {exc!r}"), asset
            )
        return Inbound(
            message.ref,
            received_ms,
            readings=readings,
            topic=message.topic,
            payload=message.payload,
        )

    def _log_decoder_failure(self, message: RawMessage) -> None:
        # A decoder bug is worth its traceback, but one hostile publisher repeating
        # the message must not write one per message.
        self._decoder_failures += 1
        now = time.monotonic()
        if now - self._decoder_failure_logged_at < _DECODER_FAILURE_LOG_INTERVAL_S:
            return
        self._decoder_failure_logged_at = now
        log.exception(
            "decoder failed on a message",
            extra=fields(
                topic=repr(message.topic[:_LOG_TOPIC_CHARS]), failures=self._decoder_failures
            ),
        )

    def _reject(self, message: RawMessage, error: PayloadError, asset: str | None) -> Inbound:
        letter = dead_letter(
            message.topic,
            message.payload,
            error,
            message.received_ms,
            self._dead_letter_max_bytes,
            asset,
        )
        # Plain str keys: orjson refuses str subclasses (the enum) as dict keys, and
        # the counter ends up in health messages.
        self._metrics.dead_letters[letter.reason.value] += 1
        return Inbound(message.ref, message.received_ms, rejected=letter)
