"""Per-asset baselines on disk: one folder per asset under ``<data_dir>/baselines``.

Asset names come from MQTT topics; a folder name must be safe on any filesystem,
so names outside ``[A-Za-z0-9._-]`` are stored under a readable prefix plus a hash.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import EdgewatchError, ModelError
from agent.logs import fields

if TYPE_CHECKING:
    from models.commission import AssetBaseline
    from models.lean import LeanBaseline

    Baseline = AssetBaseline | LeanBaseline

log = logging.getLogger(__name__)

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
RETIRED_DIR = "retired"


def folder_name(asset: str) -> str:
    if _SAFE.match(asset) and asset not in {".", ".."}:
        return asset
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", asset)[:40].strip(".") or "asset"
    digest = hashlib.sha256(asset.encode()).hexdigest()[:12]
    return f"{readable}-{digest}"


class BaselineStore:
    """Loads, saves and retires asset baselines in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, asset: str) -> Path:
        return self.root / folder_name(asset)

    def exists(self, asset: str) -> bool:
        return (self.path(asset) / "baseline.json").is_file()

    def load_all(self, loader: Callable[[Path], Baseline] | None = None) -> dict[str, Baseline]:
        """Every loadable baseline by asset; damaged ones are logged and skipped
        (their assets are commissioned again)."""
        if loader is None:
            from models.commission import AssetBaseline  # torch: only where baselines load

            loader = AssetBaseline.load
        found: dict[str, Baseline] = {}
        if not self.root.is_dir():
            return found
        for folder in sorted(self.root.iterdir()):
            if not (folder / "baseline.json").is_file():
                continue
            try:
                baseline = loader(folder)
            except EdgewatchError as exc:
                log.warning(
                    "asset baseline unusable", extra=fields(path=str(folder), error=str(exc))
                )
                continue
            if baseline.asset is None:
                continue
            found[baseline.asset] = baseline
        return found

    def save(self, asset: str, baseline: AssetBaseline) -> Path:
        baseline.asset = asset
        return baseline.save(self.path(asset))

    def retire(self, asset: str) -> Path | None:
        """Move the asset's baseline aside (kept for inspection); None if it had none."""
        source = self.path(asset)
        if not source.exists():
            return None
        target = self.root / RETIRED_DIR / f"{source.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.move(str(source), str(target))
        except OSError as exc:
            raise ModelError(f"cannot retire the baseline of {asset}: {exc}") from None
        return target


def baseline_version(baseline: Baseline) -> str:
    """Short stable id of a baseline, recorded with the asset."""
    created = baseline.info.get("created_ts", 0.0)
    key = f"{baseline.asset}:{created}:{baseline.threshold}:{baseline.reference}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]
