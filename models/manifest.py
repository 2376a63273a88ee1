"""Bundle manifests without torch: reading, checksums, verification, archives.

The ONNX Runtime path of the agent must never import torch, so everything needed to
trust a bundle's files lives here; :mod:`models.bundle` builds the torch networks on
top of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.errors import BundleError

FORMAT = "edgewatch-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REBUILD_HINT = "retrain or re-export the bundle; the agent keeps its previous bundle"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical(manifest: Mapping[str, Any]) -> bytes:
    """The bytes the manifest's own checksum covers (everything but that checksum)."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def json_safe(obj: Any) -> Any:
    # Manifests must be strict JSON (other tools read them); NaN/inf metrics become null.
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with its ``manifest_sha256`` (re)computed."""
    manifest = dict(json_safe(manifest))
    manifest["manifest_sha256"] = hashlib.sha256(canonical(manifest)).hexdigest()
    return manifest


def refuse(origin: Path, problem: str) -> BundleError:
    return BundleError(f"bundle {origin} refused: {problem}", hint=REBUILD_HINT)


def extract(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                # Only flat regular files: a bundle never needs links or sub-paths, and
                # refusing them closes path-traversal tricks.
                if not member.isfile() or Path(member.name).name != member.name:
                    raise BundleError(
                        f"bundle {archive} contains an unexpected entry {member.name!r}",
                        hint=REBUILD_HINT,
                    )
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"bundle {archive} is not a readable .tar.gz: {exc}") from exc


def read_verified_manifest(root: Path, origin: Path) -> dict[str, Any]:
    """The manifest in ``root``, after checking its own checksum and every file's."""
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise refuse(origin, f"{MANIFEST} is missing")
    try:
        manifest = json.loads(mpath.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise refuse(origin, f"{MANIFEST} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise refuse(origin, f"{MANIFEST} is not an edgewatch bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise refuse(
            origin,
            f"format_version {manifest.get('format_version')!r} is not supported "
            f"(this edgewatch reads {FORMAT_VERSION})",
        )
    expected = hashlib.sha256(canonical(manifest)).hexdigest()
    if manifest.get("manifest_sha256") != expected:
        raise refuse(origin, f"{MANIFEST} was modified after it was written (checksum mismatch)")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise refuse(origin, "manifest has no file checksums")
    for fname, digest in files.items():
        fpath = root / str(fname)
        if Path(str(fname)).name != fname or not fpath.is_file():
            raise refuse(origin, f"file {fname} listed in the manifest is missing")
        if sha256_file(fpath) != digest:
            raise refuse(origin, f"file {fname} does not match its sha256 (corrupt or edited)")
    return manifest
