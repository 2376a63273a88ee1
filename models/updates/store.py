"""The gateway's model store: live, previous and candidate bundles, crash-safe.

Layout under the store's root (``<updates cache_dir>/store``)::

    state.json          which version is live, previous, candidate, pinned, rejected,
                        and the history of changes: the one pointer file
    bundles/<dir>/      complete, verified bundles (only those state.json names)
    lock                flock: the agent and the CLI both change state.json

Every change of state is one atomic replace of ``state.json`` (temporary file,
fsync, ``os.replace``, fsync of the folder), so a process killed at any instant
leaves the old state or the new one whole. A bundle enters ``bundles/`` whole (its
files fsynced, then one rename) *before* the state names it; folders the state does
not name (a download or extraction cut short, a bundle retired by a switch whose
clean-up was cut short) are deleted by :meth:`ModelStore.recover` at start.

``live`` None means the configured ``[model] bundle``: the store only ever holds
bundles that came as updates. History is kept in the same file, so it can never
disagree with the pointers; it is capped at :data:`HISTORY_MAX` entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.errors import UpdateError

STATE = "state.json"
BUNDLES = "bundles"
LOCK = "lock"
HISTORY_MAX = 100
#: Versions refused in probation or rolled back, never fetched again (newest kept).
REJECTED_MAX = 32
_FORMAT = 1


@dataclass(frozen=True)
class Slot:
    """A model the store knows: ``folder`` under ``bundles/``, None for the configured
    bundle (not copied into the store)."""

    version: str
    folder: str | None = None


@dataclass(frozen=True)
class Change:
    ts: float
    action: str
    version: str
    reason: str


@dataclass(frozen=True)
class StoreState:
    live: Slot | None = None
    previous: Slot | None = None
    candidate: Slot | None = None
    candidate_since: float | None = None
    pinned: str | None = None
    rejected: tuple[str, ...] = ()
    history: tuple[Change, ...] = field(default=(), repr=False)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["format"] = _FORMAT
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StoreState:
        def slot(value: Any) -> Slot | None:
            return None if value is None else Slot(str(value["version"]), value.get("folder"))

        return cls(
            live=slot(doc.get("live")),
            previous=slot(doc.get("previous")),
            candidate=slot(doc.get("candidate")),
            candidate_since=doc.get("candidate_since"),
            pinned=doc.get("pinned"),
            rejected=tuple(str(v) for v in doc.get("rejected", ())),
            history=tuple(Change(**c) for c in doc.get("history", ())),
        )

    def noted(self, action: str, version: str, reason: str) -> StoreState:
        entry = Change(round(time.time(), 3), action, version, reason)
        return replace(self, history=(*self.history, entry)[-HISTORY_MAX:])

    def folders(self) -> set[str]:
        return {s.folder for s in (self.live, self.previous, self.candidate) if s and s.folder}


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in root.iterdir():
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    fsync_dir(root)


def discard_partial(cache_dir: Path, staging_dir: Path) -> None:
    """Delete downloads and staged folders a killed process left behind: a bundle
    only counts once the model store has taken it in."""
    shutil.rmtree(cache_dir / "downloads", ignore_errors=True)
    shutil.rmtree(staging_dir, ignore_errors=True)


def _folder_name(version: str) -> str:
    return version.replace("@", "-").replace("/", "_")


class ModelStore:
    """Reads and changes the store; every change holds the lock and is one replace."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bundles = root / BUNDLES
        self.state_path = root / STATE

    def path_of(self, slot: Slot) -> Path | None:
        return None if slot.folder is None else self.bundles / slot.folder

    def read(self) -> StoreState:
        try:
            text = self.state_path.read_text()
        except FileNotFoundError:
            return StoreState()
        try:
            return StoreState.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise UpdateError(
                f"model store state {self.state_path} is unreadable: {exc}",
                hint="it is only written by atomic replace; restore it from a backup or "
                "delete it to run the configured [model] bundle",
            ) from exc

    def stamp(self) -> tuple[int, int] | None:
        """Changes whenever state.json is replaced (cheap to poll)."""
        try:
            st = self.state_path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK).open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _write(self, state: StoreState) -> None:
        data = json.dumps(state.to_json(), indent=1).encode()
        tmp = self.root / f".{STATE}.{os.getpid()}.tmp"
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.state_path)
        fsync_dir(self.root)

    def _sweep(self, state: StoreState) -> list[str]:
        """Delete what the state does not name: leftovers of an interrupted step."""
        removed = []
        for tmp in self.root.glob(f".{STATE}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
        if self.bundles.is_dir():
            keep = state.folders()
            for path in self.bundles.iterdir():
                if path.name not in keep:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path.name)
        return removed

    def recover(self) -> tuple[StoreState, list[str]]:
        """At start: drop leftovers, and any slot whose folder is gone (never by the
        store's own steps; by hand). Returns the state and what was removed."""
        with self._locked():
            state = self.read()
            fixed = state
            for name in ("live", "previous", "candidate"):
                slot: Slot | None = getattr(fixed, name)
                path = None if slot is None else self.path_of(slot)
                if slot is not None and path is not None and not path.is_dir():
                    gone: dict[str, Any] = {name: None}
                    fixed = replace(fixed, **gone).noted(
                        "lost", slot.version, f"the {name} bundle folder {path} is missing"
                    )
            if fixed != state:
                self._write(fixed)
            return fixed, self._sweep(fixed)

    def change(self, step: Any) -> StoreState:
        """Apply ``step(state) -> state`` under the lock and write the result."""
        with self._locked():
            new = step(self.read())
            if not isinstance(new, StoreState):  # pragma: no cover - programming error
                raise TypeError("a store step returns a StoreState")
            self._write(new)
            self._sweep(new)
            return new

    # The steps of a model's life. Each reads the current state under the lock.

    def add_candidate(self, staged: Path, version: str, reason: str) -> StoreState:
        """Move a verified, staged bundle folder in as the candidate."""
        with self._locked():
            state = self.read()
            self.bundles.mkdir(parents=True, exist_ok=True)
            folder = _folder_name(version)
            target = self.bundles / folder
            if target.exists() and folder not in state.folders():
                shutil.rmtree(target)
            _fsync_tree(staged)
            if not target.exists():
                staged.replace(target)
                fsync_dir(self.bundles)
                fsync_dir(staged.parent)
            new = replace(
                state, candidate=Slot(version, folder), candidate_since=time.time()
            ).noted("candidate", version, reason)
            self._write(new)
            self._sweep(new)
            return new

    def promote(self, version: str, reason: str, *, running: str) -> StoreState:
        """The candidate becomes live; ``running`` (the live version, the configured
        bundle's when the store has none) becomes previous."""

        def step(state: StoreState) -> StoreState:
            if state.candidate is None or state.candidate.version != version:
                raise UpdateError(f"{version} is no longer the candidate")
            if state.pinned is not None:
                raise UpdateError(f"the live model is pinned to {state.pinned}")
            return replace(
                state,
                live=state.candidate,
                previous=state.live or Slot(running),
                candidate=None,
                candidate_since=None,
            ).noted("promoted", version, reason)

        return self.change(step)

    def reject(self, version: str, reason: str) -> StoreState:
        def step(state: StoreState) -> StoreState:
            rejected = (*[v for v in state.rejected if v != version], version)
            candidate = state.candidate
            if candidate is not None and candidate.version == version:
                candidate = None
            return replace(
                state,
                candidate=candidate,
                candidate_since=state.candidate_since if candidate else None,
                rejected=rejected[-REJECTED_MAX:],
            ).noted("rejected", version, reason)

        return self.change(step)

    def rollback(self, reason: str, *, configured: str | None = None) -> StoreState:
        """The previous model becomes live; the one replaced is rejected (never fetched
        again) and any candidate is dropped. ``configured`` names the configured
        bundle's version, for a live model that came as an update over it."""

        def step(state: StoreState) -> StoreState:
            if state.live is None:
                raise UpdateError(
                    "nothing to roll back to: the configured [model] bundle is live",
                    hint="`edgewatch model status` shows the history",
                )
            if state.pinned is not None:
                raise UpdateError(
                    f"the live model is pinned to {state.pinned}",
                    hint="`edgewatch model pin --unpin` first",
                )
            back = state.previous
            if back is not None and back.folder is None:
                back = None  # the configured bundle: live None
            gone = state.live.version
            rejected = (*[v for v in state.rejected if v != gone], gone)[-REJECTED_MAX:]
            to = back.version if back else (configured or "the configured [model] bundle")
            return replace(
                state,
                live=back,
                previous=None,
                candidate=None,
                candidate_since=None,
                rejected=rejected,
            ).noted("rolled_back", gone, f"{reason}; {to} is live again")

        return self.change(step)

    def pin(self, version: str | None, live_version: str) -> StoreState:
        def step(state: StoreState) -> StoreState:
            if version is None:
                return replace(state, pinned=None).noted(
                    "unpinned", state.pinned or live_version, "updates may replace it again"
                )
            if version != live_version:
                raise UpdateError(
                    f"{version} is not the live model ({live_version})",
                    hint="pin the live version; `edgewatch model rollback` returns the "
                    "previous one",
                )
            return replace(state, pinned=version).noted(
                "pinned", version, "updates will not replace it"
            )

        return self.change(step)
