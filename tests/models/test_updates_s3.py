"""``s3://`` model repositories against a real S3 HTTP endpoint (moto on 127.0.0.1)."""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from agent.errors import UpdateError, UpdateRefusedError
from models.bundles import default_bundle_path
from models.lean import onnxruntime_available
from models.updates.client import fetch_update
from models.updates.repository import init_keys, publish, revoke
from tests.conftest import CliRunner
from tests.models.test_updates import make_version, version_of
from tests.support import free_port

pytestmark = pytest.mark.skipif(not onnxruntime_available(), reason="needs onnxruntime")

KEY = "testing"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": KEY,
    }


@pytest.fixture
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in aws_env(endpoint).items():
        monkeypatch.setenv(name, value)
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def keys_and_live(tmp: Path) -> tuple[Path, Path]:
    keys = tmp / "keys"
    init_keys(keys)
    live = tmp / "live"
    shutil.copytree(default_bundle_path("pump"), live)
    return keys, live


def fetch(url: str, keys: Path, tmp: Path, current: str | None = None) -> Any:
    return fetch_update(
        url,
        keys / "root.json",
        tmp / "cache",
        tmp / "staging",
        name="pump",
        current_version=current,
    )


def test_two_versions_published_to_s3_the_newest_is_fetched_and_verified(
    s3: Any, bucket: str, tmp_path: Path
) -> None:
    keys, _ = keys_and_live(tmp_path)
    url = f"s3://{bucket}/updates"
    v1, v2 = make_version(tmp_path, "1"), make_version(tmp_path, "2")
    publish(v1, url, keys)
    p2 = publish(v2, url, keys)
    assert p2.sequence == 2
    names = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "updates/metadata/timestamp.json" in names
    assert {"updates/metadata/1.targets.json", "updates/metadata/2.targets.json"} <= names
    assert sum(n.startswith("updates/targets/pump/") for n in names) == 2
    staged = fetch(url, keys, tmp_path)
    assert staged is not None and staged.version == p2.version
    assert version_of(staged.path) == p2.version


def test_a_tampered_object_in_the_bucket_is_refused(s3: Any, bucket: str, tmp_path: Path) -> None:
    keys, _ = keys_and_live(tmp_path)
    url = f"s3://{bucket}"
    publish(make_version(tmp_path, "1"), url, keys)
    (key,) = (
        o["Key"]
        for o in s3.list_objects_v2(Bucket=bucket)["Contents"]
        if o["Key"].startswith("targets/")
    )
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=data[:-10] + b"0123456789")
    with pytest.raises(UpdateRefusedError, match="does not match its signed length or hash"):
        fetch(url, keys, tmp_path)
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").iterdir())


def test_revoke_via_s3_is_seen_by_the_gateway(s3: Any, bucket: str, tmp_path: Path) -> None:
    keys, _ = keys_and_live(tmp_path)
    url = f"s3://{bucket}/r"
    p1 = publish(make_version(tmp_path, "1"), url, keys)
    p2 = publish(make_version(tmp_path, "2"), url, keys)
    revoked = revoke(p2.version, url, keys)
    assert revoked.targets_version == 3
    staged = fetch(url, keys, tmp_path)
    assert staged is not None and staged.version == p1.version
    with pytest.raises(UpdateError, match="already revoked"):
        revoke(p2.version, url, keys)


def test_an_unreachable_endpoint_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in aws_env(f"http://127.0.0.1:{free_port()}").items():
        monkeypatch.setenv(name, value)
    keys, _ = keys_and_live(tmp_path)
    with pytest.raises(UpdateError, match="cannot read repository s3://nowhere/x: endpoint"):
        publish(make_version(tmp_path, "1"), "s3://nowhere/x", keys)
    with pytest.raises(UpdateError, match="cannot be read") as info:
        fetch("s3://nowhere/x", keys, tmp_path)
    assert "\n" not in str(info.value)


def test_publish_and_fetch_s3_through_the_cli(
    cli: CliRunner, endpoint: str, bucket: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    env = aws_env(endpoint)
    assert cli("model", "keys", "init", str(keys)).returncode == 0
    v1 = make_version(tmp_path, "1")
    url = f"s3://{bucket}/cli"
    done = cli("model", "publish", str(v1), "--repo", url, "--keys", str(keys), "--json", env=env)
    assert done.returncode == 0, done.stderr
    published = json.loads(done.stdout)
    env["EDGEWATCH_UPDATES__CACHE_DIR"] = str(tmp_path / "updates")
    args = ("--repo", url, "--trusted-root", str(keys / "root.json"))
    done = cli("model", "fetch", *args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == published["version"]


def test_the_gateway_settings_take_an_s3_repository() -> None:
    from agent.settings import load_settings

    updates = {"enabled": True, "repo": "s3://models/site-a", "trusted_root": "/etc/root.json"}
    assert load_settings(None, {"updates": updates}).updates.repo == "s3://models/site-a"


def test_publish_uploads_the_archive_then_metadata_then_the_timestamp_last(
    s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.updates.s3 as s3_module

    keys, _ = keys_and_live(tmp_path)
    url = f"s3://{bucket}/o"
    publish(make_version(tmp_path, "1"), url, keys)
    puts: list[str] = []
    real_client = s3_module.client

    def recording_client() -> Any:
        inner = real_client()
        real_put = inner.put_object

        def put_object(**kwargs: Any) -> Any:
            puts.append(kwargs["Key"])
            return real_put(**kwargs)

        inner.put_object = put_object
        return inner

    monkeypatch.setattr(s3_module, "client", recording_client)
    publish(make_version(tmp_path, "2"), url, keys)
    assert puts[0].startswith("o/targets/pump/") and puts[-1] == "o/metadata/timestamp.json"
    # Only what is new: versioned metadata is never rewritten, root is unchanged.
    assert sorted(puts[1:-1]) == ["o/metadata/2.snapshot.json", "o/metadata/2.targets.json"]


def test_a_missing_object_is_the_404_ngclient_expects(s3: Any, bucket: str) -> None:
    from tuf.api.exceptions import DownloadHTTPError

    from models.updates.s3 import S3Fetcher

    with pytest.raises(DownloadHTTPError) as info:
        S3Fetcher().fetch(f"s3://{bucket}/metadata/2.root.json")
    assert info.value.status_code == 404
    s3.put_object(Bucket=bucket, Key="metadata/1.root.json", Body=b"{}")
    assert b"".join(S3Fetcher().fetch(f"s3://{bucket}/metadata/1.root.json")) == b"{}"
