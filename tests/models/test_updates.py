"""Signed model updates: a real TUF repository in a folder, the real ngclient.

Every refusal must name what failed, leave nothing staged and never touch the live
bundle (a copy of the shipped pump bundle that the update code is never given).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata

from agent.errors import BundleError, UpdateError, UpdateRefusedError
from models.bundles import default_bundle_path
from models.lean import onnxruntime_available
from models.manifest import MANIFEST, read_verified_manifest, seal
from models.updates.client import StagedUpdate, fetch_update
from models.updates.repository import init_keys, publish, revoke
from tests.conftest import CliRunner

pytestmark = pytest.mark.skipif(not onnxruntime_available(), reason="needs onnxruntime")


def make_version(tmp: Path, tag: str) -> Path:
    """A copy of the shipped pump bundle with a new content version."""
    out = tmp / f"pump-{tag}"
    shutil.copytree(default_bundle_path("pump"), out)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["notes"] = f"retrained {tag}"
    (out / MANIFEST).write_text(json.dumps(seal(manifest)))
    return out


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@dataclass
class World:
    tmp: Path
    keys: Path
    repo: Path
    cache: Path
    staging: Path
    live: Path
    live_digest: str

    @property
    def url(self) -> str:
        return self.repo.as_uri()

    def fetch(self, current: str | None = None) -> StagedUpdate | None:
        return fetch_update(
            self.url,
            self.keys / "root.json",
            self.cache,
            self.staging,
            name="pump",
            current_version=current,
        )

    def refused(self, match: str, current: str | None = None) -> UpdateRefusedError:
        with pytest.raises(UpdateRefusedError, match=match) as info:
            self.fetch(current)
        assert "live bundle is unchanged" in str(info.value)
        assert not self.staging.exists() or not any(self.staging.iterdir())
        assert tree_digest(self.live) == self.live_digest
        return info.value


@pytest.fixture
def world(tmp_path: Path) -> World:
    live = tmp_path / "live"
    shutil.copytree(default_bundle_path("pump"), live)
    keys = tmp_path / "keys"
    init_keys(keys)
    return World(
        tmp_path,
        keys,
        tmp_path / "repo",
        tmp_path / "cache",
        tmp_path / "staging",
        live,
        tree_digest(live),
    )


def version_of(bundle: Path) -> str:
    return str(read_verified_manifest(bundle, bundle)["version"])


def test_keys_are_private_files_and_not_overwritten(world: World) -> None:
    for role in ("root", "targets", "snapshot", "timestamp"):
        mode = stat.S_IMODE((world.keys / f"{role}.key").stat().st_mode)
        assert mode == 0o600, role
    root = Metadata.from_file(str(world.keys / "root.json"))
    assert root.signed.type == "root"
    with pytest.raises(UpdateError, match="already holds update keys"):
        init_keys(world.keys)


def test_a_published_bundle_is_fetched_verified_and_staged(world: World) -> None:
    v1 = make_version(world.tmp, "1")
    published = publish(v1, world.url, world.keys)
    assert published.version == version_of(v1)
    assert published.sequence == 1
    staged = world.fetch()
    assert staged is not None
    assert staged.version == published.version
    assert staged.path.parent == world.staging
    assert version_of(staged.path) == published.version
    # Nothing newer than what was just staged.
    assert world.fetch(current=published.version) is None


def test_the_newest_version_is_chosen_and_publish_needs_no_root_key(world: World) -> None:
    v1, v2 = make_version(world.tmp, "1"), make_version(world.tmp, "2")
    publish(v1, world.url, world.keys)
    (world.keys / "root.key").rename(world.tmp / "root.key.offline")
    p2 = publish(v2, world.url, world.keys)
    assert p2.sequence == 2
    staged = world.fetch(current=version_of(v1))
    assert staged is not None and staged.version == p2.version


def test_a_version_is_published_once(world: World) -> None:
    v1 = make_version(world.tmp, "1")
    publish(v1, world.url, world.keys)
    with pytest.raises(UpdateError, match="already published"):
        publish(v1, world.url, world.keys)


def test_a_bundle_that_fails_verification_is_not_published(world: World) -> None:
    v1 = make_version(world.tmp, "1")
    (v1 / "anomaly.onnx").write_bytes(b"forged")
    with pytest.raises(BundleError, match="does not match its sha256"):
        publish(v1, world.url, world.keys)
    assert not (world.repo / "metadata" / "timestamp.json").exists()


def test_tampered_target_bytes_are_refused(world: World) -> None:
    publish(make_version(world.tmp, "1"), world.url, world.keys)
    (archive,) = (world.repo / "targets" / "pump").glob("*.tar.gz")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    world.refused("does not match its signed length or hash")


def test_metadata_signed_by_a_wrong_key_is_refused(world: World) -> None:
    publish(make_version(world.tmp, "1"), world.url, world.keys)
    path = world.repo / "metadata" / "timestamp.json"
    forged = Metadata.from_file(str(path))
    forged.signed.version += 1
    forged.sign(CryptoSigner.generate_ed25519())
    forged.to_file(str(path))
    world.refused("not signed by the keys the trusted root names")


def test_publishing_with_keys_the_repository_does_not_trust_is_refused(world: World) -> None:
    publish(make_version(world.tmp, "1"), world.url, world.keys)
    other = world.tmp / "other-keys"
    init_keys(other)
    with pytest.raises(UpdateError, match="not a targets key the repository's root trusts"):
        publish(make_version(world.tmp, "2"), world.url, other)


def test_a_repository_of_another_root_is_refused(world: World) -> None:
    other = world.tmp / "other-keys"
    init_keys(other)
    publish(make_version(world.tmp, "1"), world.url, other)
    world.refused("not signed by the keys the trusted root names")


def test_expired_snapshot_is_refused(world: World) -> None:
    past = datetime.now(UTC) - timedelta(days=5)
    publish(
        make_version(world.tmp, "1"),
        world.url,
        world.keys,
        expires_days=1,
        timestamp_days=30,
        now=past,
    )
    world.refused(r"has expired .*snapshot\.json is expired")


def test_a_frozen_repository_whose_timestamp_expired_is_refused(world: World) -> None:
    # Published ten days ago and never re-signed since: a mirror replaying it is frozen.
    past = datetime.now(UTC) - timedelta(days=10)
    publish(make_version(world.tmp, "1"), world.url, world.keys, timestamp_days=7, now=past)
    world.refused(r"has expired .*timestamp\.json is expired")


def test_older_metadata_offered_after_newer_was_seen_is_refused(world: World) -> None:
    v1, v2 = make_version(world.tmp, "1"), make_version(world.tmp, "2")
    publish(v1, world.url, world.keys)
    old_timestamp = (world.repo / "metadata" / "timestamp.json").read_bytes()
    assert world.fetch() is not None
    publish(v2, world.url, world.keys)
    staged = world.fetch(current=version_of(v1))
    assert staged is not None and staged.version == version_of(v2)
    shutil.rmtree(world.staging)
    # A mirror (or attacker) serves the old, validly signed metadata again.
    (world.repo / "metadata" / "timestamp.json").write_bytes(old_timestamp)
    world.refused("older than what this gateway has seen", current=version_of(v2))


def test_an_older_version_is_never_offered_as_an_update(world: World) -> None:
    v1, v2 = make_version(world.tmp, "1"), make_version(world.tmp, "2")
    publish(v1, world.url, world.keys)
    publish(v2, world.url, world.keys)
    assert world.fetch(current=version_of(v2)) is None


def test_a_revoked_version_is_never_chosen(world: World) -> None:
    v1, v2 = make_version(world.tmp, "1"), make_version(world.tmp, "2")
    publish(v1, world.url, world.keys)
    publish(v2, world.url, world.keys)
    revoked = revoke(version_of(v2), world.url, world.keys)
    assert revoked.sequence == 2
    assert world.fetch(current=version_of(v1)) is None
    staged = world.fetch()
    assert staged is not None and staged.version == version_of(v1)
    with pytest.raises(UpdateError, match="already revoked"):
        revoke(version_of(v2), world.url, world.keys)
    with pytest.raises(UpdateError, match="not published"):
        revoke("pump@0000000000000000", world.url, world.keys)


def test_a_signed_bundle_whose_graphs_miss_its_golden_windows_is_refused(world: World) -> None:
    # Correct checksums and a valid signature are not enough: the graphs must still
    # compute what the bundle promises.
    import numpy as np
    from safetensors.numpy import load_file, save_file

    v1 = make_version(world.tmp, "1")
    manifest = json.loads((v1 / MANIFEST).read_text())
    golden_name = manifest["onnx"]["golden"]
    golden = load_file(str(v1 / golden_name))
    key = next(k for k in golden if k.startswith("expected."))
    golden[key] = (golden[key] + np.float32(1000.0)).astype(golden[key].dtype)
    save_file(golden, str(v1 / golden_name))
    manifest["files"][golden_name] = hashlib.sha256((v1 / golden_name).read_bytes()).hexdigest()
    (v1 / MANIFEST).write_text(json.dumps(seal(manifest)))
    publish(v1, world.url, world.keys)
    world.refused("golden windows")


def test_an_unreadable_repository_is_an_update_error_not_a_refusal(world: World) -> None:
    with pytest.raises(UpdateError, match="cannot be read") as info:
        world.fetch()
    assert not isinstance(info.value, UpdateRefusedError)
    assert tree_digest(world.live) == world.live_digest


def test_only_file_and_s3_urls_can_be_published_to(world: World) -> None:
    with pytest.raises(UpdateError, match="supports file:// and s3://"):
        publish(make_version(world.tmp, "1"), "https://host/models", world.keys)


def test_enabling_updates_needs_a_repository_and_a_trusted_root() -> None:
    from agent.errors import ConfigError
    from agent.settings import load_settings

    assert load_settings(None, {}).updates.enabled is False
    with pytest.raises(ConfigError, match="enabled needs repo and trusted_root"):
        load_settings(None, {"updates": {"enabled": True, "repo": "file:///srv/models"}})


def test_keys_init_publish_and_fetch_through_the_cli(cli: CliRunner, tmp_path: Path) -> None:
    keys, repo = tmp_path / "keys", tmp_path / "repo"
    done = cli("model", "keys", "init", str(keys))
    assert done.returncode == 0, done.stderr
    assert "root.key to offline storage" in done.stdout.replace("\n", " ")
    v1 = make_version(tmp_path, "1")
    done = cli("model", "publish", str(v1), "--repo", repo.as_uri(), "--keys", str(keys), "--json")
    assert done.returncode == 0, done.stderr
    published = json.loads(done.stdout)
    assert published["version"] == version_of(v1) and published["sequence"] == 1

    env = {"EDGEWATCH_UPDATES__CACHE_DIR": str(tmp_path / "updates")}
    args = ("--repo", repo.as_uri(), "--trusted-root", str(keys / "root.json"))
    done = cli("model", "fetch", *args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    staged = json.loads(done.stdout)
    assert staged["version"] == published["version"]
    assert version_of(Path(staged["path"])) == published["version"]


def test_a_refused_update_is_one_error_line_from_the_cli(cli: CliRunner, world: World) -> None:
    publish(make_version(world.tmp, "1"), world.url, world.keys)
    (archive,) = (world.repo / "targets" / "pump").glob("*.tar.gz")
    archive.write_bytes(archive.read_bytes()[:-10] + b"0123456789")
    args = ("--repo", world.url, "--trusted-root", str(world.keys / "root.json"))
    done = cli("model", "fetch", *args, env={"EDGEWATCH_UPDATES__CACHE_DIR": str(world.cache)})
    assert done.returncode == 1
    assert done.stderr.startswith("error: model update from")
    assert "does not match its signed length or hash" in done.stderr
    assert "Traceback" not in done.stderr
