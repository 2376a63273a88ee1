"""Cloud side of signed model updates: keys, publish and revoke (python-tuf).

Four ed25519 keys, one per TUF role, each the only key of its role (threshold 1):

- ``root.key`` signs the root metadata once, at :func:`init_keys`; it is the offline
  key: move it off the publishing machine (the other three keep working without it);
- ``targets.key``, ``snapshot.key``, ``timestamp.key`` sign every publish and revoke.

``root.json`` in the keys folder is the signed root metadata: the trust anchor that
every gateway gets as ``updates.trusted_root``. Keys are PEM (PKCS#8), mode 0600.

Each bundle version is one target, a reproducible ``.tar.gz`` of the bundle's files
(:func:`models.updates._store.pack`), with custom fields ``edgewatch.version`` (the
bundle's content version), ``edgewatch.name``, ``edgewatch.sequence`` (1, 2, ... in
publishing order: "newer" means a higher sequence, since content versions are hashes)
and ``edgewatch.revoked``. A revoked version stays listed, marked, so that an agent
running it can tell; it is never offered as an update.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from agent.errors import BundleError, UpdateError
from models.lean import has_graphs
from models.manifest import MANIFEST, extract, read_verified_manifest
from models.updates._store import METADATA, TARGETS, local_root, pack, write_atomic
from models.updates.s3 import working_copy

ROLES = ("root", "targets", "snapshot", "timestamp")
ONLINE_ROLES = ("targets", "snapshot", "timestamp")
ROOT_JSON = "root.json"
KEY_SUFFIX = ".key"
#: How long the root metadata is trusted (a new root needs the offline root key).
ROOT_EXPIRES_DAYS = 365
DEFAULT_EXPIRES_DAYS = 90
DEFAULT_TIMESTAMP_DAYS = 7
CUSTOM = "edgewatch"
_KEY_MODE = 0o600

T = TypeVar("T", Root, Timestamp, Snapshot, Targets)


@dataclass(frozen=True)
class Published:
    """What a publish or revoke left in the repository."""

    version: str
    target_path: str
    sequence: int
    targets_version: int
    expires: datetime


def target_info(target: TargetFile) -> dict[str, Any]:
    """The edgewatch custom fields of a target (empty when it has none)."""
    custom = target.unrecognized_fields.get("custom", {})
    info = custom.get(CUSTOM) if isinstance(custom, dict) else None
    return info if isinstance(info, dict) else {}


def _key_path(keys_dir: Path, role: str) -> Path:
    return keys_dir / f"{role}{KEY_SUFFIX}"


def init_keys(keys_dir: Path, *, now: datetime | None = None) -> Path:
    """Create the four role keys and the signed root metadata in ``keys_dir``.

    Returns the path of ``root.json`` (the gateways' trust anchor). Refuses to
    overwrite existing keys: losing them means re-provisioning every gateway.
    """
    now = now or datetime.now(UTC)
    existing = [p.name for p in (_key_path(keys_dir, r) for r in ROLES) if p.exists()]
    if existing or (keys_dir / ROOT_JSON).exists():
        raise UpdateError(
            f"{keys_dir} already holds update keys ({', '.join(existing) or ROOT_JSON})",
            hint="use another folder; replacing keys locks out every provisioned gateway",
        )
    keys_dir.mkdir(parents=True, exist_ok=True)
    keys_dir.chmod(0o700)
    root = Root(expires=now + timedelta(days=ROOT_EXPIRES_DAYS), consistent_snapshot=True)
    signers: dict[str, CryptoSigner] = {}
    for role in ROLES:
        signer = CryptoSigner.generate_ed25519()
        signers[role] = signer
        root.add_key(signer.public_key, role)
        write_atomic(_key_path(keys_dir, role), signer.private_bytes, mode=_KEY_MODE)
    metadata = Metadata(root)
    metadata.sign(signers["root"])
    write_atomic(keys_dir / ROOT_JSON, metadata.to_bytes())
    return keys_dir / ROOT_JSON


def _signer(keys_dir: Path, role: str, root: Root) -> CryptoSigner:
    path = _key_path(keys_dir, role)
    try:
        private = load_pem_private_key(path.read_bytes(), None)
        signer = CryptoSigner(private)
    except FileNotFoundError:
        raise UpdateError(
            f"no {role} key at {path}", hint="pass the folder `edgewatch model keys init` made"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise UpdateError(f"{path} is not a usable {role} key: {exc}") from exc
    if signer.public_key.keyid not in root.roles[role].keyids:
        raise UpdateError(
            f"{path} is not a {role} key the repository's root trusts",
            hint="use the keys folder this repository was created with",
        )
    return signer


@dataclass
class _State:
    root: Metadata[Root]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]


def _load(path: Path, cls: type[T]) -> Metadata[T]:
    try:
        md: Metadata[Any] = Metadata.from_file(str(path))
    except (OSError, ValueError, RepositoryError) as exc:
        raise UpdateError(f"repository metadata {path} is unreadable: {exc}") from exc
    if not isinstance(md.signed, cls):
        raise UpdateError(f"repository metadata {path} is not {cls.type} metadata")
    return md


def _latest_root(meta: Path) -> Path:
    versions = [int(p.name.split(".")[0]) for p in meta.glob("*.root.json")]
    return meta / f"{max(versions)}.root.json"


def _open_repo(repo: Path, keys_dir: Path) -> _State:
    meta = repo / METADATA
    if not (meta / "timestamp.json").is_file():
        # A new repository starts from the keys folder's root and empty roles.
        root = _load(keys_dir / ROOT_JSON, Root)
        write_atomic(meta / "1.root.json", root.to_bytes())
        return _State(
            root,
            Metadata(Targets(version=1)),
            Metadata(Snapshot(version=1)),
            Metadata(Timestamp(version=1)),
        )
    root = _load(_latest_root(meta), Root)
    timestamp = _load(meta / "timestamp.json", Timestamp)
    snapshot = _load(meta / f"{timestamp.signed.snapshot_meta.version}.snapshot.json", Snapshot)
    targets_meta = snapshot.signed.meta["targets.json"]
    targets = _load(meta / f"{targets_meta.version}.targets.json", Targets)
    # Bump from the published state: the first write is version 2.
    for md in (targets, snapshot, timestamp):
        md.signed.version += 1
    return _State(root, targets, snapshot, timestamp)


def _commit(
    repo: Path,
    state: _State,
    keys_dir: Path,
    now: datetime,
    expires_days: float,
    timestamp_days: float,
) -> datetime:
    """Sign targets, snapshot and timestamp in that order and write them (timestamp
    last, atomically: the switch readers see)."""
    root = state.root.signed
    meta = repo / METADATA
    expires = now + timedelta(days=expires_days)
    state.targets.signed.expires = expires
    state.targets.sign(_signer(keys_dir, "targets", root))
    targets_bytes = state.targets.to_bytes()
    write_atomic(meta / f"{state.targets.signed.version}.targets.json", targets_bytes)

    state.snapshot.signed.meta["targets.json"] = MetaFile(version=state.targets.signed.version)
    state.snapshot.signed.expires = expires
    state.snapshot.sign(_signer(keys_dir, "snapshot", root))
    snapshot_bytes = state.snapshot.to_bytes()
    write_atomic(meta / f"{state.snapshot.signed.version}.snapshot.json", snapshot_bytes)

    state.timestamp.signed.snapshot_meta = MetaFile.from_data(
        state.snapshot.signed.version, snapshot_bytes, ["sha256"]
    )
    state.timestamp.signed.expires = now + timedelta(days=timestamp_days)
    state.timestamp.sign(_signer(keys_dir, "timestamp", root))
    write_atomic(meta / "timestamp.json", state.timestamp.to_bytes())
    return expires


def _bundle_files(bundle: Path, work: Path) -> tuple[Path, dict[str, Any]]:
    if not bundle.exists():
        raise BundleError(f"bundle {bundle} not found", hint="check the path")
    root = bundle
    if bundle.is_file():
        root = work / "bundle"
        root.mkdir()
        extract(bundle, root)
    manifest = read_verified_manifest(root, bundle)
    if not has_graphs(root):
        raise BundleError(
            f"bundle {bundle} has no ONNX graphs: gateways check golden windows with them",
            hint=f"run `edgewatch model export {bundle}` first",
        )
    return root, manifest


@contextmanager
def _repository(repo_url: str, purpose: str) -> Iterator[Path]:
    """The repository as a local folder: itself for ``file://``, a working copy
    uploaded on success for ``s3://`` (see :mod:`models.updates.s3`)."""
    if repo_url.startswith("s3://"):
        with working_copy(repo_url) as local:
            yield local
    else:
        yield local_root(repo_url, purpose=purpose)


def publish(
    bundle: Path,
    repo_url: str,
    keys_dir: Path,
    *,
    expires_days: float = DEFAULT_EXPIRES_DAYS,
    timestamp_days: float = DEFAULT_TIMESTAMP_DAYS,
    now: datetime | None = None,
) -> Published:
    """Add ``bundle`` (directory or ``.tar.gz``, verified first) as a new target.

    ``now`` is the signing time (expiry counts from it); tests set it in the past.
    """
    now = now or datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="edgewatch-publish-") as tmp:
        root_dir, manifest = _bundle_files(bundle, Path(tmp))
        names = [MANIFEST, *manifest["files"]]
        data = pack(root_dir, names)
    version = str(manifest["version"])
    name, _, digest = version.partition("@")
    with _repository(repo_url, "publish") as repo:
        state = _open_repo(repo, keys_dir)
        targets = state.targets.signed.targets
        sequence = 1
        for existing in targets.values():
            info = target_info(existing)
            if info.get("version") == version:
                state_word = "revoked" if info.get("revoked") else "published"
                raise UpdateError(
                    f"{version} is already {state_word} in {repo_url}",
                    hint="a version is published once; retrain or re-export for a new one",
                )
            sequence = max(sequence, int(info.get("sequence", 0)) + 1)
        target_path = f"{name}/{digest}.tar.gz"
        target = TargetFile.from_data(target_path, data, ["sha256"])
        target.unrecognized_fields["custom"] = {
            CUSTOM: {
                "version": version,
                "name": name,
                "sequence": sequence,
                "published_at": now.isoformat(timespec="seconds"),
                "revoked": False,
            }
        }
        # The bytes first, under their hash (consistent snapshot): then the metadata.
        write_atomic(repo / TARGETS / name / f"{target.hashes['sha256']}.{digest}.tar.gz", data)
        targets[target_path] = target
        expires = _commit(repo, state, keys_dir, now, expires_days, timestamp_days)
        return Published(version, target_path, sequence, state.targets.signed.version, expires)


def revoke(
    version: str,
    repo_url: str,
    keys_dir: Path,
    *,
    expires_days: float = DEFAULT_EXPIRES_DAYS,
    timestamp_days: float = DEFAULT_TIMESTAMP_DAYS,
    now: datetime | None = None,
) -> Published:
    """Mark ``version`` revoked: agents never take it as an update again."""
    now = now or datetime.now(UTC)
    with _repository(repo_url, "revoke") as repo:
        if not (repo / METADATA / "timestamp.json").is_file():
            raise UpdateError(f"{repo_url} holds no published bundle", hint="check --repo")
        state = _open_repo(repo, keys_dir)
        for path, target in state.targets.signed.targets.items():
            info = target_info(target)
            if info.get("version") == version:
                if info.get("revoked"):
                    raise UpdateError(f"{version} is already revoked in {repo_url}")
                info["revoked"] = True
                info["revoked_at"] = now.isoformat(timespec="seconds")
                expires = _commit(repo, state, keys_dir, now, expires_days, timestamp_days)
                return Published(
                    version, path, int(info["sequence"]), state.targets.signed.version, expires
                )
    raise UpdateError(
        f"{version} is not published in {repo_url}",
        hint="give the full version as `edgewatch model publish` printed it (name@hex)",
    )
