"""OPC UA ingest: monitored items on OPC UA servers, as the readings MQTT ingest makes.

Each ``[[opcua.endpoints]]`` server gets one client session and one subscription with
a monitored item per configured variable (``sampling_interval_ms``, a queue of
``queue_size``). The server reports changes; :class:`Grouper` turns them into
readings with the grouping rule below, the same checks as JSON payloads, and the same
dead letters and reason codes; readings and dead letters go on the runtime's ingest
queue as :class:`~agent.domain.Inbound` objects, exactly like the MQTT subscriber's.

Grouping rule (docs/opcua.md): an asset's changes whose source timestamps lie within
one sampling interval of the first of them, with no sensor twice, are one reading,
stamped with the newest of those source timestamps. The group closes as soon as every
sensor of the asset has reported in it, else two publishing intervals after it opened
(the rest of a tick may come in the next publish; counted only while the agent is not
behind), else when the connection ends. A reading holds the latest good value of
every sensor of the asset, so a sensor the server reports by exception (unchanged, not
sent) keeps its value.

A bad value (non-finite, not a number, a status other than Good) makes its group a
dead letter and takes the sensor's value away until a good one comes: later readings
lack it (and the windowing stage dead-letters them as ``missing_sensor``).

``asyncua`` is imported only when an endpoint connects: a gateway without OPC UA
does not need the ``opcua`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from agent.domain import Event, Inbound, Reading, RejectReason, dead_letter, sensor_name
from agent.errors import EdgewatchError, PayloadError
from agent.logs import fields
from agent.metrics import Metrics
from agent.settings import OpcUaEndpoint, OpcUaSettings

from .decode import DecodeLimits

if TYPE_CHECKING:
    from asyncua import ua
    from asyncua.client.client import Client
    from asyncua.common.subscription import DataChangeNotif

log = logging.getLogger(__name__)

#: Changes the servers sent that wait for the grouper; past it new ones are dropped
#: and counted (OPC UA has no flow control back to the server's sampling).
CHANGES_MAX: Final = 10_000
#: Seconds between checks of the client's own connection state (no request: asyncua's
#: watchdog is what asks the server, every ``timeout_s``).
WATCH_INTERVAL_S: Final = 1.0
_DISCONNECT_TIMEOUT_S: Final = 2.0
#: A tick some of whose sensors have not reported closes after this many publishing
#: intervals: the server may cut a tick between two publishes, and the second comes a
#: publishing interval (and some jitter) after the first.
HOLD_PUBLISHES: Final = 2
#: OPC UA's BadWaitingForInitialData: a variable whose source has not delivered yet.
BAD_WAITING_FOR_INITIAL_DATA: Final = 0x80320000
_DROP_LOG_INTERVAL_S: Final = 60.0
_MS_PER_S: Final = 1000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Change:
    """One monitored item's report: the value, its status, when it was sampled."""

    asset: str
    sensor: str
    value: object
    #: None for Good, else the status code's name (BadSensorFailure, Uncertain...).
    status: str | None
    #: Source timestamp, else server timestamp (epoch ms); None when the server sent neither.
    ts_ms: int | None


@dataclass(slots=True, eq=False)
class _Group:
    first_ms: int
    last_ms: int
    opened: float
    changes: dict[str, Change] = field(default_factory=dict)


class Grouper:
    """Pure: changes of one endpoint in, :class:`Inbound` objects out (see module doc)."""

    def __init__(
        self,
        site: str,
        source: str,
        assets: dict[str, dict[str, str]],
        *,
        span_ms: float,
        hold_s: float,
        limits: DecodeLimits,
        dead_letter_max_bytes: int,
        metrics: Metrics,
        max_open: int = 1000,
    ) -> None:
        self._site = site
        self._source = source
        self._sensors = {asset: frozenset(nodes) for asset, nodes in assets.items()}
        self._nodes = assets
        # A span of 0 (sample as fast as you can) groups equal timestamps only.
        self._span_ms = max(span_ms, 1.0)
        self._hold_s = hold_s
        self._limits = limits
        self._dead_max = dead_letter_max_bytes
        self._metrics = metrics
        self._max_open = max_open
        #: Asset -> its open groups, oldest source timestamp first, and their first
        #: source timestamps (for bisection: a backlog opens thousands of ticks).
        self._open: dict[str, list[_Group]] = {}
        self._starts: dict[str, list[int]] = {}
        #: Asset -> sensor -> latest good value.
        self._current: dict[str, dict[str, float]] = {asset: {} for asset in assets}

    def add(self, change: Change, now_ms: int, mono: float) -> list[Inbound]:
        asset = change.asset
        ts = now_ms if change.ts_ms is None else change.ts_ms
        groups = self._open.setdefault(asset, [])
        starts = self._starts.setdefault(asset, [])
        # A server sends the samples it queued item by item (all of one variable's,
        # then the next one's): each change joins the nearest open tick it fits.
        target: _Group | None = None
        span = self._span_ms
        for group in groups[bisect_right(starts, ts - span) : bisect_left(starts, ts + span)]:
            gap = abs(ts - group.first_ms)
            if change.sensor not in group.changes and (
                target is None or gap < abs(ts - target.first_ms)
            ):
                target = group
        if target is None:
            target = _Group(ts, ts, mono)
            at = bisect_right(starts, ts)
            starts.insert(at, ts)
            groups.insert(at, target)
        target.changes[change.sensor] = change
        target.last_ms = max(target.last_ms, ts)
        if len(target.changes) == len(self._sensors[asset]):
            return self._close_through(asset, target, now_ms)
        if len(groups) > self._max_open:
            return self._close_through(asset, groups[0], now_ms)
        return []

    def due(self, now_ms: int, mono: float) -> list[Inbound]:
        """Ticks open for a publishing interval (nothing more will join them), and every
        older tick of their asset with them: readings leave in source-time order."""
        out: list[Inbound] = []
        for asset, groups in list(self._open.items()):
            late = [g for g in groups if mono - g.opened >= self._hold_s]
            if late:
                out += self._close_through(asset, late[-1], now_ms)
        return out

    def next_due(self) -> float | None:
        """Monotonic time at which the oldest open tick falls due."""
        opened = [g.opened for groups in self._open.values() for g in groups]
        return min(opened) + self._hold_s if opened else None

    def flush(self, now_ms: int) -> list[Inbound]:
        """Every open tick (the connection is gone: nothing more will join them)."""
        out: list[Inbound] = []
        for asset, groups in list(self._open.items()):
            if groups:
                out += self._close_through(asset, groups[-1], now_ms)
        return out

    def _close_through(self, asset: str, last: _Group, now_ms: int) -> list[Inbound]:
        """Close ``last`` and every older open tick of the asset, oldest first."""
        groups = self._open[asset]
        upto = groups.index(last) + 1
        closing, groups[:upto] = groups[:upto], []
        del self._starts[asset][:upto]
        return [self._close(asset, group, now_ms) for group in closing]

    def _close(self, asset: str, group: _Group, now_ms: int) -> Inbound:
        metrics = self._metrics
        metrics.messages_received += 1
        payload = self._payload(asset, group)
        current = self._current[asset]
        try:
            self._check_time(group.last_ms, now_ms)
            error: PayloadError | None = None
            for sensor in sorted(group.changes):
                try:
                    current[sensor] = _value(group.changes[sensor])
                except PayloadError as exc:
                    current.pop(sensor, None)
                    error = error or exc
            if error is not None:
                raise error
        except PayloadError as exc:
            letter = dead_letter(self._source, payload, exc, now_ms, self._dead_max, asset)
            metrics.dead_letters[letter.reason.value] += 1
            return Inbound(None, now_ms, rejected=letter)
        reading = Reading(self._site, asset, group.last_ms, dict(current))
        return Inbound(None, now_ms, readings=(reading,), topic=self._source, payload=payload)

    def _check_time(self, ts_ms: int, now_ms: int) -> None:
        limits = self._limits
        if ts_ms > now_ms + limits.max_future_ms:
            raise PayloadError(
                RejectReason.TS_FUTURE,
                f"source timestamp is {ts_ms - now_ms} ms ahead of the clock",
            )
        if ts_ms < now_ms - limits.max_past_ms:
            raise PayloadError(
                RejectReason.TS_PAST, f"source timestamp is {now_ms - ts_ms} ms behind the clock"
            )

    def _payload(self, asset: str, group: _Group) -> bytes:
        """The group as the dead letter (or late-reading letter) shows it."""
        nodes = self._nodes[asset]
        return orjson.dumps(
            {
                "ts": group.last_ms / _MS_PER_S,
                "values": {s: _shown(c.value) for s, c in sorted(group.changes.items())},
                "status": {s: c.status for s, c in sorted(group.changes.items()) if c.status},
                "nodes": {s: nodes[s] for s in sorted(group.changes)},
            }
        )


def _value(change: Change) -> float:
    """The change's value as a sensor value, or the reason it is none."""
    name = sensor_name(change.sensor)
    if change.status is not None:
        raise PayloadError(RejectReason.SCHEMA, f"{name} has status {change.status}")
    value = change.value
    if isinstance(value, bool):  # an int to Python, but a switch is no sensor reading
        raise PayloadError(RejectReason.SCHEMA, f"{name} must be a number, not bool")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(RejectReason.NON_FINITE, f"{name} is {value}")
        return float(value)
    if isinstance(value, int):  # OPC UA integers are at most 64 bits: always finite
        return float(value)
    raise PayloadError(RejectReason.SCHEMA, f"{name} must be a number, not {type(value).__name__}")


def _shown(value: object) -> object:
    if isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return repr(value)[:64]


class OpcUaIngest:
    """The ingest stage for OPC UA: every endpoint's session, subscription and
    reconnects; readings and dead letters onto ``out`` (backpressure included)."""

    def __init__(
        self,
        settings: OpcUaSettings,
        site: str,
        limits: DecodeLimits,
        out: asyncio.Queue[Inbound],
        metrics: Metrics,
        dead_letter_max_bytes: int,
        record: Callable[[Event], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._site = site
        self._limits = limits
        self._out = out
        self._metrics = metrics
        self._dead_max = dead_letter_max_bytes
        self._record = record
        self._stopping = asyncio.Event()
        #: Set once any endpoint's first session is up (monitored items created).
        self.first_session = asyncio.Event()
        self.connected: dict[str, bool] = {ep.url: False for ep in settings.endpoints}
        #: Connections made per endpoint (tests and status read it).
        self.sessions: dict[str, int] = {ep.url: 0 for ep in settings.endpoints}
        self.changes_dropped = 0
        self._dropped_logged_at = -math.inf

    def stop(self) -> None:
        """Stop reading; what is already on ``out`` stays there to be drained."""
        self._stopping.set()

    async def run(self) -> None:
        """Until cancelled or :meth:`stop`; a server that is away is retried for ever."""
        endpoints = self._settings.endpoints
        for endpoint in endpoints:
            _check_node_ids(endpoint)
        _quiet_asyncua()
        secrets = [await asyncio.to_thread(_load_security, ep) for ep in endpoints]
        async with asyncio.TaskGroup() as group:
            for endpoint, security in zip(endpoints, secrets, strict=True):
                group.create_task(self._endpoint(endpoint, security), name=f"opcua {endpoint.url}")

    async def _endpoint(self, endpoint: OpcUaEndpoint, security: _Security | None) -> None:
        s = self._settings
        delay = s.reconnect_initial_s
        state = "starting"
        url = endpoint.url
        while not self._stopping.is_set():
            changes: asyncio.Queue[Change] = asyncio.Queue(CHANGES_MAX)
            lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            try:
                client, subscribed = await self._connect(endpoint, security, changes, lost)
            except Exception as exc:  # every failure to connect is retried
                if state != "down":
                    state = "down"
                    await self._state_change(
                        url,
                        "opcua_unreachable",
                        f"OPC UA server {url} unreachable: {_why(exc)}",
                        "warning",
                        retry_s=delay,
                    )
                else:
                    log.debug("opcua connect failed", extra=fields(url=url, error=_why(exc)))
                if await self._wait_stop(delay):
                    return
                delay = min(delay * 2, s.reconnect_max_s)
                continue
            delay = s.reconnect_initial_s
            state = "up"
            self.connected[url] = True
            self.sessions[url] += 1
            self.first_session.set()
            await self._state_change(
                url,
                "opcua_connected",
                f"OPC UA server {url} connected",
                "info",
                security=f"{endpoint.security_policy}/{endpoint.security_mode}",
                **subscribed,
            )
            try:
                why = await self._read(client, endpoint, changes, lost)
            finally:
                self.connected[url] = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), _DISCONNECT_TIMEOUT_S)
            if why is None:
                return
            state = "down"
            await self._state_change(
                url,
                "opcua_disconnected",
                f"OPC UA server {url} connection lost: {why}",
                "warning",
                retry_s=delay,
            )

    async def _connect(
        self,
        endpoint: OpcUaEndpoint,
        security: _Security | None,
        changes: asyncio.Queue[Change],
        lost: asyncio.Future[str],
    ) -> tuple[Client, dict[str, object]]:
        from asyncua import ua
        from asyncua.client.client import Client
        from asyncua.crypto import security_policies

        s = self._settings
        # asyncua's watchdog reads the server state every watchdog_intervall and gives
        # the read as long: a busy server answering in 1.5 s is not a dead one (at 1 s
        # a flat-out simulator was "lost" and re-subscribed). A closed socket is
        # noticed at once whatever the period.
        client = Client(endpoint.url, timeout=s.timeout_s, watchdog_intervall=s.timeout_s)
        client.application_uri = endpoint.application_uri
        client.name = client.description = "edgewatch"
        if security is not None:
            policy = getattr(security_policies, f"SecurityPolicy{endpoint.security_policy}")
            await client.set_security(
                policy,
                security.cert,
                security.key,
                server_certificate=security.server_cert,
                mode=getattr(ua.MessageSecurityMode, endpoint.security_mode),
            )
        if endpoint.username is not None:
            client.set_user(endpoint.username)
        if endpoint.password is not None:
            client.set_password(endpoint.password.get_secret_value())
        try:
            await asyncio.wait_for(client.connect(), s.timeout_s)
        except BaseException:
            # A connect cut short (the timeout's cancel) leaves its socket open.
            with contextlib.suppress(Exception):
                client.disconnect_socket()
            raise

        async def on_lost(exc: Exception) -> None:
            _lose(lost, _why(exc))

        client.connection_lost_callback = on_lost
        try:
            return client, await self._subscribe(client, endpoint, changes, lost)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), _DISCONNECT_TIMEOUT_S)
            raise

    async def _subscribe(
        self,
        client: Client,
        endpoint: OpcUaEndpoint,
        changes: asyncio.Queue[Change],
        lost: asyncio.Future[str],
    ) -> dict[str, object]:
        from asyncua import ua

        s = self._settings
        targets: dict[Any, list[tuple[str, str]]] = {}
        for asset, nodes in endpoint.assets.items():
            for sensor, node_id in nodes.items():
                targets.setdefault(ua.NodeId.from_string(node_id), []).append((asset, sensor))
        handler = _Handler(
            targets, lambda change: self._offer(changes, change), lambda why: _lose(lost, why)
        )
        sub = await client.create_subscription(s.publishing_interval_ms, handler)
        items = [client.get_node(node_id) for node_id in targets]
        handles = await sub.subscribe_data_change(
            items, queuesize=s.queue_size, sampling_interval=ua.Double(s.sampling_interval_ms)
        )
        refused = {
            node.nodeid.to_string(): str(handle)
            for node, handle in zip(items, handles, strict=True)
            if not isinstance(handle, int)
        }
        if refused:
            # A misspelt node id is the operator's to fix; the others are still read.
            log.error(
                "opcua monitored items refused",
                extra=fields(url=endpoint.url, refused=dict(list(refused.items())[:20])),
            )
        return {"monitored_items": len(items) - len(refused), "refused": sorted(refused)[:20]}

    async def _read(
        self,
        client: Client,
        endpoint: OpcUaEndpoint,
        changes: asyncio.Queue[Change],
        lost: asyncio.Future[str],
    ) -> str | None:
        """Changes to the ingest queue until the connection is lost (why) or stop (None)."""
        s = self._settings
        grouper = Grouper(
            self._site,
            endpoint.url,
            dict(endpoint.assets),
            span_ms=s.sampling_interval_ms,
            hold_s=HOLD_PUBLISHES * s.publishing_interval_ms / _MS_PER_S,
            limits=self._limits,
            dead_letter_max_bytes=self._dead_max,
            metrics=self._metrics,
            # A publish may carry queue_size samples of every variable, item by item:
            # that many ticks open before their second sensor comes.
            max_open=2 * s.queue_size + 10,
        )
        watch = asyncio.create_task(self._watch(client, lost))
        stop = asyncio.create_task(self._stopping.wait())
        try:
            while True:
                due = grouper.next_due() if changes.empty() else None
                timeout = None if due is None else max(0.0, due - time.monotonic())
                get = asyncio.ensure_future(changes.get())
                waiting: set[asyncio.Future[Any]] = {get, lost, stop}
                done, _ = await asyncio.wait(
                    waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if get not in done:
                    get.cancel()
                change = get.result() if get in done else None
                now_ms, mono = _now_ms(), time.monotonic()
                out = grouper.add(change, now_ms, mono) if change is not None else []
                if changes.empty():
                    # Behind (a backlog queued), a tick's other sensors may be in the
                    # queue still: the timer only runs once everything sent is read.
                    out += grouper.due(now_ms, mono)
                if stop in done or lost in done:
                    # What the server sent before the end is read, not dropped.
                    while not changes.empty():
                        out += grouper.add(changes.get_nowait(), now_ms, mono)
                    out += grouper.flush(now_ms)
                for inbound in out:
                    await self._out.put(inbound)
                if stop in done:
                    return None
                if lost in done:
                    return lost.result()
        finally:
            for task in (watch, stop):
                task.cancel()

    async def _watch(self, client: Client, lost: asyncio.Future[str]) -> None:
        """Fallback for asyncua versions whose watchdog calls no callback."""
        while not lost.done():
            await asyncio.sleep(WATCH_INTERVAL_S)  # a period, not synchronisation
            try:
                await asyncio.wait_for(client.check_connection(), self._settings.timeout_s)
            except Exception as exc:  # whatever it raises, the connection is unusable
                _lose(lost, _why(exc))

    def _offer(self, changes: asyncio.Queue[Change], change: Change) -> None:
        """From the subscription handler: never blocks the client's publish loop."""
        try:
            changes.put_nowait(change)
        except asyncio.QueueFull:
            self.changes_dropped += 1
            now = time.monotonic()
            if now - self._dropped_logged_at >= _DROP_LOG_INTERVAL_S:
                self._dropped_logged_at = now
                log.warning(
                    "opcua changes dropped: ingest is behind",
                    extra=fields(dropped=self.changes_dropped),
                )

    async def _wait_stop(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()

    async def _state_change(
        self, url: str, kind: str, message: str, level: str, **detail: object
    ) -> None:
        log.log(
            logging.WARNING if level == "warning" else logging.INFO,
            kind.replace("_", " "),
            extra=fields(url=url, **detail),
        )
        if self._record is not None:
            await self._record(
                Event(_now_ms(), kind, message, level, detail={"url": url, **detail})
            )


class _Handler:
    """asyncua's subscription handler: data changes to :class:`Change` objects."""

    def __init__(
        self,
        targets: dict[Any, list[tuple[str, str]]],
        offer: Callable[[Change], None],
        lose: Callable[[str], None],
    ) -> None:
        self._targets = targets
        self._offer = offer
        self._lose = lose

    def datachange_notification(self, node: Any, val: Any, data: DataChangeNotif) -> None:
        targets = self._targets.get(node.nodeid)
        if not targets:
            return
        value = data.monitored_item.Value
        status = None
        ts_ms: int | None = None
        if value is not None:
            code = value.StatusCode
            if code is not None and code.value == BAD_WAITING_FOR_INITIAL_DATA:
                return  # the server has no value yet: nothing was sampled, nothing is wrong
            if code is not None and not code.is_good():
                status = code.name
            stamp = value.SourceTimestamp or value.ServerTimestamp
            if stamp is not None:
                ts_ms = _epoch_ms(stamp)
        for asset, sensor in targets:
            self._offer(Change(asset, sensor, val, status, ts_ms))

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        # The server ended the subscription (BadTimeout, BadShutdown...): start over.
        code = status.Status
        if code is not None and not code.is_good():
            self._lose(f"subscription ended by the server: {code.name}")


def _epoch_ms(stamp: datetime) -> int:
    # asyncua gives naive UTC datetimes (1.x) or aware ones (2.x).
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return round(stamp.timestamp() * _MS_PER_S)


@dataclass(frozen=True, slots=True)
class _Security:
    cert: Any
    key: Any
    server_cert: Any


def _load_security(endpoint: OpcUaEndpoint) -> _Security | None:
    """The endpoint's certificates and key, read and parsed once at start: a missing
    or unreadable file is the operator's to fix, not a reason to retry for ever."""
    if not endpoint.secure:
        return None
    from asyncua.crypto.uacrypto import CertProperties
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    assert endpoint.cert_file and endpoint.key_file and endpoint.server_cert_file
    loaded = []
    for key, path in (
        ("cert_file", endpoint.cert_file),
        ("key_file", endpoint.key_file),
        ("server_cert_file", endpoint.server_cert_file),
    ):
        try:
            content = Path(path).read_bytes()
            pem = content.lstrip().startswith(b"-----BEGIN")
            if key == "key_file":
                load_key = (
                    serialization.load_pem_private_key
                    if pem
                    else serialization.load_der_private_key
                )
                load_key(content, password=None)
            else:
                (x509.load_pem_x509_certificate if pem else x509.load_der_x509_certificate)(content)
        except (OSError, ValueError, TypeError) as exc:
            raise EdgewatchError(
                f"opcua endpoint {endpoint.url}: {key} {path} cannot be used: {_why(exc)}",
                hint="point it at a readable DER or PEM file (an unencrypted key)",
            ) from None
        loaded.append(CertProperties(content, extension="pem" if pem else "der"))
    return _Security(*loaded)


def _lose(lost: asyncio.Future[str], why: str) -> None:
    if not lost.done():
        lost.set_result(why)


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _quiet_asyncua() -> None:
    """asyncua logs every publish at INFO and each lost connection as warnings and
    tracebacks; the state-change lines here say what matters. At DEBUG its warnings
    go to the agent's log too."""
    lib = logging.getLogger("asyncua")
    lib.propagate = False
    if log.isEnabledFor(logging.DEBUG):
        lib.handlers[:] = logging.getLogger("agent").handlers
        lib.setLevel(logging.WARNING)
    else:
        lib.setLevel(logging.CRITICAL)


def _check_node_ids(endpoint: OpcUaEndpoint) -> None:
    try:
        from asyncua import ua
    except ImportError:
        raise EdgewatchError(
            "opcua.enabled is true but asyncua is not installed",
            hint="pip install 'edgewatch[opcua]', or set opcua.enabled = false",
        ) from None
    for asset, nodes in endpoint.assets.items():
        for sensor, node_id in nodes.items():
            try:
                ua.NodeId.from_string(node_id)
            except Exception:  # asyncua raises several kinds for a malformed id
                raise EdgewatchError(
                    f"opcua endpoint {endpoint.url}: asset {asset!r} sensor {sensor!r}: "
                    f"{node_id!r} is no node id",
                    hint='write it as OPC UA does, e.g. "ns=2;s=Pump1.Temp" or "ns=2;i=1001"',
                ) from None
