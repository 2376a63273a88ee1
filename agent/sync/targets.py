"""Object stores addressed by URL: ``file:///path`` and ``s3://bucket/prefix``.

A target's :meth:`Target.put` is blocking (run it in a thread) and returns only once
the store has confirmed the object: the file is fsynced and renamed into place with
its length checked; S3 verified the body's MD5 (``Content-MD5``) and echoed it as the
ETag. Every failure is a :class:`SyncError` with one line that never holds secrets.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from agent.errors import SyncError

#: Temporary files of the file target start with this (never listed as objects).
TMP_PREFIX = ".tmp-"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
#: File-system errors that belong to the object (its name), not to the target: the
#: same put will fail forever, whatever the uplink does.
PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EISDIR, errno.ENOTDIR})
#: 4xx codes that speak about the whole target (credentials, bucket, clock, rate):
#: every object would fail alike, so they keep the retry with backoff.
TARGET_WIDE_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "InvalidToken",
        "NoSuchBucket",
        "RequestTimeTooSkewed",
        "RequestTimeout",
        "SignatureDoesNotMatch",
        "SlowDown",
        "TokenRefreshRequired",
        # A body damaged on the way: the next attempt sends it again intact.
        "BadDigest",
    }
)
TARGET_WIDE_STATUS = frozenset({401, 403, 404, 408, 409, 429})


class PermanentUploadError(SyncError):
    """The target refused this object for good (a too-long key, a permanent 4xx).

    Retrying it cannot help; the uploader sets the item aside and drains the rest.
    """


class Target(Protocol):
    #: Where objects go, for logs and status (no credentials).
    description: str

    def put(self, key: str, body: bytes, sha256: str) -> None:
        """Store ``body`` under ``key``; return only once the store confirmed it."""
        ...

    def list_objects(self) -> dict[str, bytes]:
        """Every object below the prefix with its bytes (tests and tools)."""
        ...


class FileTarget:
    """A local folder standing in for the cloud (demo default)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = root.as_uri()

    def put(self, key: str, body: bytes, sha256: str) -> None:
        final = self.root / key
        tmp = final.with_name(f"{TMP_PREFIX}{final.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(final)
            # The rename is durable only once the directory entry is on disk.
            dir_fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            size = final.stat().st_size
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno in PERMANENT_ERRNOS:
                raise PermanentUploadError(
                    f"{self.description} cannot store {key!r}: {exc.strerror or exc}"
                ) from None
            raise SyncError(
                f"cannot write to {self.description}: {exc.strerror or exc}",
                hint="check that the target folder exists, is writable and has space",
            ) from None
        if size != len(body):
            raise SyncError(f"{self.description}/{key}: stored {size} bytes of {len(body)}")

    def list_objects(self) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        if not self.root.exists():
            return found
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.startswith(TMP_PREFIX):
                found[path.relative_to(self.root).as_posix()] = path.read_bytes()
        return found


@dataclass(frozen=True, slots=True)
class S3Options:
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None


class S3Target:
    """An S3 bucket (or compatible store) via boto3; one client shared by threads."""

    def __init__(self, bucket: str, prefix: str, options: S3Options) -> None:
        import boto3  # imported here: most commands never touch S3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        where = f" at {options.endpoint_url}" if options.endpoint_url else ""
        self.description = f"s3://{bucket}/{self.prefix}{where}".rstrip("/")
        kwargs: dict[str, Any] = {
            "endpoint_url": options.endpoint_url,
            "region_name": options.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            "config": Config(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                # Our own backoff decides about retries; botocore's would hide outages.
                retries={"max_attempts": 1, "mode": "standard"},
                max_pool_connections=32,
            ),
        }
        if options.access_key_id:
            kwargs["aws_access_key_id"] = options.access_key_id
        if options.secret_access_key:
            kwargs["aws_secret_access_key"] = options.secret_access_key
        try:
            self.client = boto3.session.Session().client("s3", **kwargs)
        except Exception as exc:  # botocore raises many kinds for bad configuration
            raise SyncError(f"cannot set up S3 client for {self.description}: {exc}") from None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, body: bytes, sha256: str) -> None:
        md5 = hashlib.md5(body, usedforsecurity=False)
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=body,
                ContentMD5=base64.b64encode(md5.digest()).decode(),
                Metadata={"sha256": sha256},
            )
        except Exception as exc:
            error = self._translate(exc)
            if isinstance(error, PermanentUploadError):
                error = PermanentUploadError(f"{error.message} (key {key!r})")
            raise error from None
        etag = str(response.get("ETag", "")).strip('"')
        if etag != md5.hexdigest():
            raise SyncError(f"{self.description}/{key}: store answered ETag {etag!r}, not the MD5")

    def list_objects(self) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
            )
            for page in pages:
                for entry in page.get("Contents", []):
                    name = entry["Key"]
                    body = self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read()
                    found[name[len(self.prefix) + 1 :] if self.prefix else name] = body
        except Exception as exc:
            raise self._translate(exc) from None
        return found

    def _translate(self, exc: BaseException) -> SyncError:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        if isinstance(exc, NoCredentialsError):
            return SyncError(
                f"no S3 credentials for {self.description}",
                hint="set sync.s3_access_key_id/s3_secret_access_key or AWS_* environment",
            )
        if isinstance(exc, EndpointConnectionError):
            return SyncError(f"cannot reach {self.description}: connection failed")
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code == "NoSuchBucket":
                return SyncError(
                    f"bucket {self.bucket!r} does not exist ({self.description})",
                    hint="create it or fix sync.target",
                )
            if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}:
                return SyncError(
                    f"S3 refused the credentials for {self.description} ({code})",
                    hint="check the access key id and secret",
                )
            if code in {"AccessDenied", "403"}:
                return SyncError(
                    f"access denied to {self.description}",
                    hint="the credentials lack s3:PutObject on this bucket/prefix",
                )
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            object_bound = 400 <= status < 500 and status not in TARGET_WIDE_STATUS
            if object_bound and code not in TARGET_WIDE_CODES:
                return PermanentUploadError(
                    f"{self.description} refused the object for good: {code or status}"
                )
            return SyncError(f"{self.description} refused the upload: {code or exc}")
        if isinstance(exc, BotoCoreError | OSError):
            return SyncError(f"cannot reach {self.description}: {type(exc).__name__}")
        return SyncError(f"upload to {self.description} failed: {type(exc).__name__}: {exc}")


def open_target(url: str, options: S3Options | None = None) -> Target:
    """The target a ``file://`` or ``s3://`` URL names."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in {"", "localhost"}:
            raise SyncError(f"file target {url} must be a local path (file:///path)")
        return FileTarget(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise SyncError(f"s3 target {url} names no bucket (s3://bucket/prefix)")
        return S3Target(parsed.netloc, unquote(parsed.path), options or S3Options())
    raise SyncError(f"unsupported sync target {url!r}", hint="use file:///path or s3://bucket")
