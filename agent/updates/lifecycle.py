"""A model's life on the gateway: fetched -> candidate in shadow -> live -> previous.

:class:`ModelLifecycle` runs two loops in the agent:

- the poller (when ``updates.enabled``): at start and every ``poll_interval_s``, the
  TUF client (in a thread: it blocks on files and the network) fetches and verifies
  the newest version into the model store as the candidate. Every refusal is an
  event and an MQTT status message; the live model is not touched.
- the control loop, every ``control_interval_s``: follows the store's ``state.json``
  (so `edgewatch model rollback` and `model pin`, which change only that file, take
  effect within a second), starts the shadow of a new candidate, and judges it when
  its probation is over: promoted by hot swap, or rejected with the reason.

Every change is written to the store first and applied in memory after, so a kill
at any point restarts on the state the file names. The inference stage (the
:class:`ShadowHost`) scores, swaps and judges; this module decides.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tarfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.domain import Event
from agent.errors import EdgewatchError, UpdateError, UpdateRefusedError
from agent.logs import fields
from agent.memory import rss_mb
from agent.settings import UpdateSettings
from models.manifest import MANIFEST
from models.updates.store import ModelStore, Slot, StoreState

log = logging.getLogger(__name__)


class VerdictLike(Protocol):
    @property
    def passed(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def figures(self) -> dict[str, Any]: ...


class ShadowHost(Protocol):
    """What the inference stage offers (see agent.inference.worker)."""

    def incompatible(self, predictor: Any) -> str | None: ...
    async def start_shadow(self, version: str, path: Path, predictor: Any) -> None: ...
    def probation(self) -> dict[str, Any] | None: ...
    async def judge(self) -> VerdictLike | None: ...
    async def drop_shadow(self) -> None: ...
    async def promote(self) -> float: ...
    async def install(self, predictor: Any, path: Path) -> float: ...


@dataclass(frozen=True)
class Configured:
    """The ``[model] bundle``: live whenever the store names none."""

    version: str
    path: Path


def bundle_version(path: Path) -> str:
    """The version a bundle (directory or ``.tar.gz``) names, unverified: a label."""
    try:
        if path.is_dir():
            manifest = json.loads((path / MANIFEST).read_text())
        else:
            with tarfile.open(path, "r:gz") as tar:
                member = tar.extractfile(MANIFEST)
                manifest = json.loads(member.read()) if member is not None else {}
        return str(manifest["version"])
    except (OSError, KeyError, ValueError, tarfile.TarError):
        return str(path)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _why(exc: EdgewatchError) -> str:
    return exc.message if not exc.hint else f"{exc.message}; {exc.hint}"


class ModelLifecycle:
    def __init__(
        self,
        *,
        store: ModelStore,
        settings: UpdateSettings,
        cache_dir: Path,
        host: ShadowHost,
        load: Callable[[Path], Any],
        configured: Configured,
        running: str,
        name: str,
        emit: Callable[[Event], Awaitable[None]],
        status: Callable[[dict[str, Any]], Awaitable[object]],
        on_live: Callable[[Any, Path], Awaitable[None]],
        rss: Callable[[], float | None] = rss_mb,
    ) -> None:
        self.store = store
        self.settings = settings
        self.cache_dir = cache_dir
        self.host = host
        self.load = load
        self.configured = configured
        #: The version the inference stage scores with now.
        self.running = running
        self.name = name
        self.emit = emit
        self.status = status
        self.on_live = on_live
        #: The agent's resident memory in MB (a parameter: tests stand in for /proc).
        self.rss = rss
        self._stamp: tuple[int, int] | None = None
        self._lock = asyncio.Lock()
        #: The candidate's predictor while it is in probation (one at a time).
        self._candidate: Any = None
        #: The agent's RSS before the candidate was loaded (its probation's memory cost).
        self._rss_before: float | None = None
        #: The last error of each step (poll, tick), logged once until it changes.
        self._last_error: dict[str, str] = {}

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._control(), name="model-control")
            if self.settings.enabled:
                group.create_task(self._poll(), name="model-poll")

    async def _control(self) -> None:
        while True:
            await self._guarded(self.tick)
            await asyncio.sleep(self.settings.control_interval_s)  # a period

    async def _poll(self) -> None:
        while True:
            await self._guarded(self.poll_once)
            await asyncio.sleep(self.settings.poll_interval_s)  # a period

    async def _guarded(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run one step; a failure (a full disk, an unreadable state file) is logged
        once per distinct error and the live model keeps scoring: an update must
        never stop the agent."""
        name = getattr(step, "__name__", "step")
        try:
            await step()
        except Exception as exc:
            text = str(exc) if isinstance(exc, EdgewatchError) else f"{type(exc).__name__}: {exc}"
            if text != self._last_error.get(name):
                log.error("model update step failed", extra=fields(step=name, error=text))
            self._last_error[name] = text
        else:
            self._last_error.pop(name, None)

    async def tick(self) -> None:
        """Follow the store's state if it changed, then judge a finished probation."""
        async with self._lock:
            stamp = self.store.stamp()
            if stamp != self._stamp:
                # Noted once followed: a step that failed is tried again next tick.
                await self._follow(await asyncio.to_thread(self.store.read))
                self._stamp = stamp
            progress = self.host.probation()
            if progress is not None and progress["done"]:
                verdict = await self.host.judge()
                if verdict is not None:
                    await self._decide(str(progress["version"]), verdict)

    async def poll_once(self) -> None:
        """One poll of the repository: a verified candidate lands in the store."""
        s = self.settings
        assert s.repo is not None and s.trusted_root is not None  # checked by the settings
        state = await asyncio.to_thread(self.store.read)
        if state.pinned is not None or state.candidate is not None:
            return
        skip = set(state.rejected) | {v.version for v in (state.live, state.previous) if v}
        # python-tuf and its crypto load on the first poll, not in every agent.
        from models.updates.client import check_update

        try:
            check = await asyncio.to_thread(
                check_update,
                s.repo,
                s.trusted_root,
                self.cache_dir,
                self.cache_dir / "staged",
                name=self.name,
                current_version=self.running,
                skip=skip,
            )
        except UpdateRefusedError as exc:
            await self._tell("model_update_refused", _why(exc), level="error", state="refused")
            return
        except UpdateError as exc:
            # Offline or a repository being copied: the next poll tries again.
            log.warning("model update repository not readable", extra=fields(error=str(exc)))
            return
        if self.running in check.revoked:
            await self._revoked(state)
        staged = check.staged
        if staged is None:
            return
        reason = f"fetched and verified from {s.repo} (sequence {staged.sequence})"
        async with self._lock:
            await asyncio.to_thread(self.store.add_candidate, staged.path, staged.version, reason)
            await self._tell(
                "model_update_fetched",
                f"model {staged.version} {reason}; shadow probation starts",
                state="fetched",
                version=staged.version,
            )
        await self.tick()

    async def _revoked(self, state: StoreState) -> None:
        """The live version was revoked after it was installed: back to the previous
        model when there is one (the control loop swaps it in), else say so."""
        gone = self.running
        back = state.previous
        if state.live is None or back is None:
            await self._tell(
                "model_revoked",
                f"model {gone} is revoked in {self.settings.repo} and this gateway has no "
                "previous model to return to: publish a newer version or change [model] bundle",
                level="error",
                state="revoked",
                version=gone,
            )
            return
        async with self._lock:
            await asyncio.to_thread(
                self.store.rollback,
                f"{gone} is revoked in {self.settings.repo}",
                configured=self.configured.version,
            )
        await self._tell(
            "model_revoked",
            f"model {gone} is revoked in {self.settings.repo}; {back.version} returns",
            level="error",
            state="revoked",
            version=gone,
        )
        await self.tick()

    async def _follow(self, state: StoreState) -> None:
        wanted = state.live.version if state.live is not None else self.configured.version
        if wanted != self.running:
            await self._switch(state, state.live)
        probation = self.host.probation()
        candidate = state.candidate
        if candidate is None and probation is not None:
            await self.host.drop_shadow()
            self._candidate = None
        elif (
            candidate is not None
            and self.settings.enabled  # updates switched off: a candidate waits
            and (probation is None or probation["version"] != candidate.version)
        ):
            await self._start(candidate)

    async def _switch(self, state: StoreState, live: Slot | None) -> None:
        """Another model was made live outside the agent (rollback): swap at once."""
        path = self.configured.path if live is None else self.store.path_of(live)
        assert path is not None
        version = self.configured.version if live is None else live.version
        try:
            predictor = await asyncio.to_thread(self.load, path)
        except EdgewatchError as exc:
            await self._tell(
                "model_switch_failed",
                f"model {version} cannot be loaded ({_why(exc)}); {self.running} stays live",
                level="error",
                state="live",
            )
            return
        if (why := self.host.incompatible(predictor)) is not None:
            await self._tell(
                "model_switch_failed",
                f"model {version} cannot replace {self.running}: {why}",
                level="error",
                state="live",
            )
            return
        pause_ms = await self.host.install(predictor, path)
        gone, self.running = self.running, version
        last = state.history[-1] if state.history else None
        rolled = last is not None and last.action == "rolled_back"
        reason = last.reason.split(";")[0] if last is not None and rolled else "state file changed"
        await self.on_live(predictor, path)
        await self._tell(
            "model_rolled_back",
            f"model {gone} rolled back, {version} is live again ({reason})",
            level="warning",
            state="rolled_back",
            detail={"swap_pause_ms": round(pause_ms, 3), "rolled_back": gone},
        )

    async def _start(self, candidate: Slot) -> None:
        path = self.store.path_of(candidate)
        assert path is not None
        rss_before = self.rss()
        try:
            predictor = await asyncio.to_thread(self.load, path)
        except EdgewatchError as exc:
            await self._reject(
                candidate.version, f"it does not load as the agent would: {_why(exc)}"
            )
            return
        if (why := self.host.incompatible(predictor)) is not None:
            await self._reject(candidate.version, why)
            return
        if (why := self._memory_beyond_limit(rss_before, "loading it")) is not None:
            await self._reject(candidate.version, why)
            return
        await self.host.start_shadow(candidate.version, path, predictor)
        self._candidate = predictor
        self._rss_before = rss_before
        lim = self.host.probation() or {}
        await self._tell(
            "model_probation_started",
            f"model {candidate.version} scores in shadow beside {self.running} for "
            f"{lim.get('windows_needed')} windows and {lim.get('seconds_needed')} s",
            state="probation",
            version=candidate.version,
            detail={"rss_before_mb": rss_before, "rss_with_candidate_mb": self.rss()},
        )

    def _memory_beyond_limit(self, before: float | None, what: str) -> str | None:
        """Why the agent's memory grew too much since ``before`` (None: within limit)."""
        now = self.rss()
        limit = self.settings.max_rss_growth_mb
        if before is None or now is None or now - before <= limit:
            return None
        return (
            f"{what} grew the agent's memory by {now - before:.0f} MB "
            f"({before:.0f} -> {now:.0f} MB; limit {limit:g} MB)"
        )

    async def _decide(self, version: str, verdict: VerdictLike) -> None:
        if not verdict.passed:
            await self._reject(version, verdict.reason, verdict.figures)
            return
        why = self._memory_beyond_limit(self._rss_before, "its probation")
        if why is not None:
            await self._reject(version, why, verdict.figures)
            return
        try:
            state = await asyncio.to_thread(
                self.store.promote, version, verdict.reason, running=self.running
            )
        except UpdateError as exc:
            await self._reject(version, exc.message, verdict.figures)
            return
        self._stamp = self.store.stamp()
        pause_ms = await self.host.promote()
        gone, self.running = self.running, version
        predictor, self._candidate = self._candidate, None
        path = None if state.live is None else self.store.path_of(state.live)
        if path is not None:
            await self.on_live(predictor, path)
        await self._tell(
            "model_promoted",
            f"model {version} promoted, {gone} is previous: {verdict.reason} "
            f"(swap held scoring {pause_ms:.2f} ms)",
            state="promoted",
            version=version,
            detail={"swap_pause_ms": round(pause_ms, 3), "previous": gone, **verdict.figures},
        )

    async def _reject(
        self, version: str, reason: str, figures: dict[str, Any] | None = None
    ) -> None:
        await asyncio.to_thread(self.store.reject, version, reason)
        self._stamp = self.store.stamp()
        await self.host.drop_shadow()
        self._candidate = None
        await self._tell(
            "model_rejected",
            f"model {version} rejected: {reason}; {self.running} stays live",
            level="warning",
            state="rejected",
            version=version,
            detail=figures,
        )

    async def _tell(
        self,
        kind: str,
        message: str,
        *,
        state: str,
        level: str = "info",
        version: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """One event (the events table) and one MQTT status message, same words."""
        log.log(
            logging.WARNING if level != "info" else logging.INFO,
            kind.replace("_", " "),
            extra=fields(message=message),
        )
        await self.emit(Event(_now_ms(), kind, message, level=level, detail=detail))
        await self.status(
            {
                "state": state,
                "live": self.running,
                "version": version,
                "reason": message,
                "ts": time.time(),
            }
        )
