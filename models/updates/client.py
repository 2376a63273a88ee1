"""Agent side of signed model updates: find, download, verify and stage a bundle.

:func:`fetch_update` is the whole client workflow of TUF (python-tuf's ngclient:
root rotation, timestamp, snapshot, targets, each checked for signatures by the
keys the trusted root names, expiry and version rollback), then edgewatch's own
checks of the downloaded bundle (manifest and file checksums, content version equal
to the one the signed metadata names, golden windows through ONNX Runtime). Nothing
outside ``cache_dir`` and ``staging_dir`` is written: the live bundle is never
touched, whatever fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Targets
from tuf.ngclient import FetcherInterface, Updater

from agent.errors import BundleError, UpdateError, UpdateRefusedError
from models.lean import load_lean_bundle
from models.manifest import extract, read_verified_manifest
from models.updates._store import METADATA, TARGETS, FileFetcher, base_url
from models.updates.repository import target_info
from models.updates.s3 import S3Fetcher

_KEPT = "the live bundle is unchanged"


@dataclass(frozen=True)
class StagedUpdate:
    """A verified bundle, unpacked in the staging folder, not yet live."""

    path: Path
    version: str
    sequence: int
    target_path: str


@dataclass(frozen=True)
class _Candidate:
    target_path: str
    version: str
    sequence: int


def _refused(repo_url: str, what: str, exc: Exception) -> UpdateRefusedError:
    return UpdateRefusedError(
        f"model update from {repo_url} refused: {what} ({exc})",
        hint=f"{_KEPT}; check the repository with its publisher",
    )


def _translate(repo_url: str, exc: Exception) -> UpdateError:
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return _refused(repo_url, "its metadata has expired (stale or frozen repository)", exc)
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return _refused(repo_url, "metadata not signed by the keys the trusted root names", exc)
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return _refused(repo_url, "metadata older than what this gateway has seen", exc)
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return _refused(repo_url, "a file does not match its signed length or hash", exc)
    if isinstance(exc, tuf_errors.RepositoryError):
        return _refused(repo_url, "its metadata failed verification", exc)
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return _refused(repo_url, "a file is longer than its signed length", exc)
    return UpdateError(
        f"model update repository {repo_url} cannot be read: {exc}",
        hint=f"{_KEPT}; the next poll tries again",
    )


def _updater(repo_url: str, trusted_root: Path, cache_dir: Path) -> Updater:
    try:
        bootstrap = trusted_root.read_bytes()
    except OSError as exc:
        raise UpdateError(
            f"trusted root {trusted_root} cannot be read: {exc}",
            hint="set updates.trusted_root to the root.json of `edgewatch model keys init`",
        ) from exc
    metadata_dir = cache_dir / METADATA
    metadata_dir.mkdir(parents=True, exist_ok=True)
    scheme = urlparse(repo_url).scheme
    fetcher: FetcherInterface | None = None
    if scheme == "file":
        fetcher = FileFetcher()
    elif scheme == "s3":
        fetcher = S3Fetcher()
    try:
        return Updater(
            metadata_dir=str(metadata_dir),
            metadata_base_url=base_url(repo_url, METADATA),
            target_dir=str(cache_dir / TARGETS),
            target_base_url=base_url(repo_url, TARGETS),
            fetcher=fetcher,
            bootstrap=bootstrap,
        )
    except (tuf_errors.RepositoryError, ValueError) as exc:
        raise UpdateError(
            f"trusted root {trusted_root} is not valid TUF root metadata: {exc}",
            hint="use the root.json written by `edgewatch model keys init`",
        ) from exc


def _listed(updater: Updater, cache_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every target with its edgewatch fields, as the verified targets metadata says.

    ngclient answers per target path only; the list of paths comes from the targets
    metadata it has just verified and persisted in its metadata folder, and each entry
    is then read back through its public ``get_targetinfo``.
    """
    local = Metadata[Targets].from_file(str(cache_dir / METADATA / "targets.json"))
    listed = []
    for path in local.signed.targets:
        info = updater.get_targetinfo(path)
        if info is not None:
            listed.append((path, target_info(info)))
    return listed


def _choose(
    listed: list[tuple[str, dict[str, Any]]],
    name: str,
    current: str | None,
    skip: Collection[str] = (),
) -> _Candidate | None:
    ours = [
        (p, i) for p, i in listed if i.get("name") == name and isinstance(i.get("version"), str)
    ]
    floor = max((int(i["sequence"]) for _, i in ours if i["version"] == current), default=0)
    fresh = [
        _Candidate(p, str(i["version"]), int(i["sequence"]))
        for p, i in ours
        if not i.get("revoked") and int(i.get("sequence", 0)) > floor and i["version"] not in skip
    ]
    return max(fresh, key=lambda c: c.sequence, default=None)


@dataclass(frozen=True)
class UpdateCheck:
    """One poll: the version staged (None: nothing newer) and every version of the
    bundle name the signed metadata marks revoked."""

    staged: StagedUpdate | None
    revoked: frozenset[str]


def fetch_update(
    repo_url: str,
    trusted_root: Path,
    cache_dir: Path,
    staging_dir: Path,
    *,
    name: str,
    current_version: str | None = None,
    skip: Collection[str] = (),
) -> StagedUpdate | None:
    """Stage the newest non-revoked version of bundle ``name`` newer than the current.

    "Newer" is a higher publishing sequence than ``current_version``'s (0 when the
    repository does not list it); versions in ``skip`` (rejected on this gateway) are
    passed over. Returns ``None`` when there is nothing newer.

    Raises :class:`UpdateRefusedError` when a security check fails (the staging folder
    keeps nothing of it) and :class:`UpdateError` when the repository cannot be read.
    """
    return check_update(
        repo_url,
        trusted_root,
        cache_dir,
        staging_dir,
        name=name,
        current_version=current_version,
        skip=skip,
    ).staged


def check_update(
    repo_url: str,
    trusted_root: Path,
    cache_dir: Path,
    staging_dir: Path,
    *,
    name: str,
    current_version: str | None = None,
    skip: Collection[str] = (),
) -> UpdateCheck:
    """:func:`fetch_update`, also telling which versions are revoked (so that an agent
    can move off a live version revoked after it was installed)."""
    updater = _updater(repo_url, trusted_root, cache_dir)
    try:
        updater.refresh()
        listed = _listed(updater, cache_dir)
        revoked = frozenset(
            str(i["version"]) for _, i in listed if i.get("name") == name and i.get("revoked")
        )
        candidate = _choose(listed, name, current_version, skip)
        if candidate is None:
            return UpdateCheck(None, revoked)
        info = updater.get_targetinfo(candidate.target_path)
        assert info is not None  # listed just above from the same verified metadata
        downloads = cache_dir / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        archive = Path(
            updater.download_target(info, str(downloads / f"{candidate.sequence}.tar.gz"))
        )
    except (tuf_errors.RepositoryError, tuf_errors.DownloadError, OSError) as exc:
        raise _translate(repo_url, exc) from exc
    try:
        return UpdateCheck(_stage(archive, staging_dir, candidate, repo_url), revoked)
    finally:
        archive.unlink(missing_ok=True)


def _stage(archive: Path, staging_dir: Path, candidate: _Candidate, repo_url: str) -> StagedUpdate:
    final = staging_dir / candidate.version.replace("@", "-")
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        extract(archive, partial)
        manifest = read_verified_manifest(partial, archive)
        if manifest["version"] != candidate.version:
            raise UpdateRefusedError(
                f"model update from {repo_url} refused: the bundle is "
                f"{manifest['version']}, its signed metadata says {candidate.version}",
                hint=f"{_KEPT}; republish the bundle",
            )
        load_lean_bundle(partial, check_golden=True)
    except BundleError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise UpdateRefusedError(
            f"model update {candidate.version} from {repo_url} refused: {exc.message}",
            hint=_KEPT,
        ) from exc
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    partial.replace(final)
    return StagedUpdate(final, candidate.version, candidate.sequence, candidate.target_path)
