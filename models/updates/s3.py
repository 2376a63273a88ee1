"""``s3://bucket/prefix`` model repositories: object access, the fetcher, a working copy.

The S3 client is boto3's, configured as the sync stage's (``agent.sync.targets``) but
from the environment alone, since publishing runs on a workstation, not a gateway:
``AWS_ENDPOINT_URL`` (MinIO, moto, any compatible store), ``AWS_DEFAULT_REGION``
(default ``us-east-1``) and credentials from boto3's usual chain (environment,
``~/.aws``, instance role).

Publishing works on a local working copy (:func:`working_copy`): the metadata objects
are downloaded, the repository logic writes new files into the copy exactly as for
``file://``, and only the new or changed files are uploaded, in the order that keeps
readers safe: target archives, then the versioned metadata (``N.targets.json``,
``N.snapshot.json``, ``N.root.json``), then ``timestamp.json``. An S3 PUT replaces an
object whole, and consistent snapshots mean every other object is new, never
overwritten: a gateway polling mid-publish sees the old timestamp (whose files are all
still there) or the new one with every file it names.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tuf.api.exceptions import DownloadError, DownloadHTTPError
from tuf.ngclient import FetcherInterface

from agent.errors import UpdateError
from models.updates._store import METADATA, TARGETS

#: Short: a gateway's poll or an operator's publish should fail fast, not hang.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
_CHUNK = 1 << 16
_HINT = "check the bucket, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION and the AWS credentials"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative


def parse(url: str) -> S3Location:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise UpdateError(f"{url!r} is not an s3://bucket/prefix URL", hint="check --repo")
    return S3Location(parsed.netloc, parsed.path.strip("/"))


def client() -> Any:
    """A boto3 S3 client from the environment (endpoint, region, credentials)."""
    import boto3  # imported here: most gateways never touch S3
    from botocore.config import Config

    try:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
            region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            config=Config(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                # The next poll or the operator's retry decides; botocore's would hide outages.
                retries={"max_attempts": 1, "mode": "standard"},
            ),
        )
    except Exception as exc:  # botocore raises many kinds for bad configuration
        raise UpdateError(f"cannot set up an S3 client: {exc}", hint=_HINT) from None


def _is_missing(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def _describe(exc: BaseException) -> str:
    from botocore.exceptions import ClientError, EndpointConnectionError

    if isinstance(exc, EndpointConnectionError):
        return f"endpoint unreachable ({exc})"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', exc)}"
    return f"{type(exc).__name__}: {exc}"


class S3Fetcher(FetcherInterface):
    """ngclient fetcher for ``s3://bucket/key`` URLs.

    It only moves bytes: ngclient still checks every length, hash, signature, expiry
    and version. A missing object is a 404, as ngclient expects when it probes for
    the next root; anything else is a :class:`DownloadError` (the repository cannot
    be read, the next poll tries again).
    """

    def __init__(self) -> None:
        self._client: Any = None

    def _fetch(self, url: str) -> Iterator[bytes]:
        parsed = urlparse(url)
        if self._client is None:
            try:
                self._client = client()
            except UpdateError as exc:
                raise DownloadError(exc.message) from None
        try:
            body = self._client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))[
                "Body"
            ]
        except Exception as exc:
            if _is_missing(exc):
                raise DownloadHTTPError(f"{url} not found", 404) from None
            raise DownloadError(f"{url}: {_describe(exc)}") from None

        def chunks() -> Iterator[bytes]:
            try:
                while chunk := body.read(_CHUNK):
                    yield chunk
            except Exception as exc:
                raise DownloadError(f"{url}: {_describe(exc)}") from None
            finally:
                body.close()

        return chunks()


def _download_metadata(s3: Any, where: S3Location, local: Path, url: str) -> None:
    prefix = where.key(f"{METADATA}/")
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=where.bucket, Prefix=prefix
        ):
            for entry in page.get("Contents", []):
                name = entry["Key"][len(prefix) :]
                if not name or "/" in name:
                    continue
                data = s3.get_object(Bucket=where.bucket, Key=entry["Key"])["Body"].read()
                (local / METADATA / name).write_bytes(data)
    except Exception as exc:
        raise UpdateError(f"cannot read repository {url}: {_describe(exc)}", hint=_HINT) from None


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def _upload_order(name: str) -> int:
    if name.startswith(f"{TARGETS}/"):
        return 0
    return 2 if name == f"{METADATA}/timestamp.json" else 1


@contextmanager
def working_copy(url: str) -> Iterator[Path]:
    """A local folder holding the repository's metadata; on a clean exit, what the
    block added or changed is uploaded (targets, versioned metadata, timestamp last).

    Target archives are not downloaded: publish and revoke only add new ones.
    """
    where = parse(url)
    s3 = client()
    with tempfile.TemporaryDirectory(prefix="edgewatch-s3-repo-") as tmp:
        local = Path(tmp)
        (local / METADATA).mkdir()
        _download_metadata(s3, where, local, url)
        before = _snapshot(local)
        yield local
        after = _snapshot(local)
        changed = sorted(
            (name for name, data in after.items() if before.get(name) != data),
            key=lambda name: (_upload_order(name), name),
        )
        for name in changed:
            try:
                s3.put_object(Bucket=where.bucket, Key=where.key(name), Body=after[name])
            except Exception as exc:
                raise UpdateError(
                    f"cannot write {name} to repository {url}: {_describe(exc)}",
                    hint=f"{_HINT}; gateways still see the previous state, publish again",
                ) from None
