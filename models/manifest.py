"""Bundle manifests without torch: reading, checksums, verification, archives.

The ONNX Runtime path of the agent must never import torch, so everything needed to
trust a bundle's files lives here; :mod:`models.bundle` builds the torch networks on
top of it.

What a verified bundle promises:

- ``manifest_sha256`` covers the manifest (corruption of the manifest itself);
- ``files`` lists the sha256 of every file, and the loaders open no other file: each
  name must be a plain name inside the bundle directory (:func:`bundle_file`), never
  an absolute path, ``..`` or a link leaving it;
- ``version`` is computed from the content (:func:`content_version`: the manifest
  without its version, so every file's digest too). Whoever edits weights or
  thresholds and re-seals gets a new version, so that a version recorded with a
  prediction names one model; a bundle whose version does not match is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

from agent.errors import BundleError

FORMAT = "edgewatch-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REBUILD_HINT = "retrain or re-export the bundle; the agent keeps its previous bundle"
#: Hex digits of the content digest in a version: 64 bits, so that no one can search
#: for edited content that keeps a version.
VERSION_HEX = 16


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


def content_version(manifest: Mapping[str, Any]) -> str:
    """``<name>@<digest>`` of everything in the manifest but the version and the
    manifest checksum (which covers the version): the files' digests included."""
    body = {k: v for k, v in manifest.items() if k not in ("version", "manifest_sha256")}
    data = json.dumps(json_safe(body), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return f"{manifest.get('name')}@{hashlib.sha256(data.encode()).hexdigest()[:VERSION_HEX]}"


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with its ``version`` and ``manifest_sha256`` (re)computed."""
    manifest = dict(json_safe(manifest))
    manifest["version"] = content_version(manifest)
    manifest["manifest_sha256"] = hashlib.sha256(canonical(manifest)).hexdigest()
    return manifest


def min_rows(manifest: Mapping[str, Any]) -> int:
    """Rows an asset needs before the bundle's first estimate: ``min_rows`` of a
    RUL-only bundle trained on front-padded windows, else the whole window."""
    window = int(manifest["window"])
    raw = manifest.get("min_rows")
    if raw is None:
        return window
    rows = int(raw)
    if not 1 <= rows <= window:
        raise ValueError(f"min_rows {rows} outside 1..window ({window})")
    if manifest.get("anomaly") is not None and rows != window:
        raise ValueError("min_rows below the window is for RUL-only bundles")
    return rows


def refuse(origin: Path, problem: str) -> BundleError:
    return BundleError(f"bundle {origin} refused: {problem}", hint=REBUILD_HINT)


def _plain_name(name: object) -> TypeGuard[str]:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in "/\\\0")
        and Path(name).name == name
    )


def bundle_file(root: Path, origin: Path, files: Mapping[str, Any], name: object) -> Path:
    """The path of ``name`` in the bundle at ``root``, if the manifest lists it in
    ``files`` (so its sha256 was checked) and it stays inside ``root``; else refused."""
    if not _plain_name(name):
        raise refuse(origin, f"{name!r} is not a plain file name inside the bundle")
    if name not in files:
        raise refuse(origin, f"file {name} has no checksum in the manifest")
    path = root / name
    if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
        raise refuse(origin, f"file {name} is a link leading out of the bundle")
    return path


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
    if mpath.is_symlink() and not mpath.resolve().is_relative_to(root.resolve()):
        raise refuse(origin, f"{MANIFEST} is a link leading out of the bundle")
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
        fpath = bundle_file(root, origin, files, fname)
        if not fpath.is_file():
            raise refuse(origin, f"file {fname} listed in the manifest is missing")
        if sha256_file(fpath) != digest:
            raise refuse(origin, f"file {fname} does not match its sha256 (corrupt or edited)")
    version = manifest.get("version")
    if version != content_version(manifest):
        raise refuse(
            origin,
            f"bundle version does not match its content ({version!r}, content says "
            f"{content_version(manifest)!r}): edited and re-sealed, or sealed by an "
            "older edgewatch",
        )
    return manifest
