"""Object listing and reading under a ``file://`` or ``s3://bucket/prefix`` URL.

The gateways' sync stage writes ``<prefix>/<site>/<agent>/<kind>/yyyy/mm/dd/<asset>/<name>``
(``agent.outbox.item_key``). This module only moves bytes: it lists every object below
the prefix (keys relative to it) and reads one. S3 access is boto3's, configured from the
environment as :mod:`models.updates.s3` does (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``,
the usual credential chain), since fleet retraining runs on a workstation or a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from agent.errors import DatasetError

#: The file target writes ``.tmp-*`` files and renames them into place: never objects.
TEMP_PREFIX = ".tmp-"
_HINT = "check --data (file:///path or s3://bucket/prefix) and, for S3, the AWS_* settings"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object: its key below the prefix, size and modification time."""

    key: str
    size: int
    modified_ms: int


class Store:
    """Read-only access to the objects below one URL prefix."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        parsed = urlparse(self.url)
        self.scheme = parsed.scheme
        if parsed.scheme == "file":
            self.root: Path | None = Path(unquote(parsed.path))
            if not self.root.is_dir():
                raise DatasetError(f"{url}: no such folder", hint=_HINT)
            self.bucket = ""
            self.prefix = ""
        elif parsed.scheme == "s3" and parsed.netloc:
            self.root = None
            self.bucket = parsed.netloc
            self.prefix = parsed.path.strip("/")
        else:
            raise DatasetError(
                f"{url!r} is neither file:///path nor s3://bucket/prefix", hint=_HINT
            )
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            from models.updates.s3 import client

            self._client = client()
        return self._client

    def _s3_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def list(self) -> Iterator[ObjectInfo]:
        """Every object below the prefix (in no particular order, possibly repeated)."""
        if self.root is not None:
            for path in self.root.rglob("*"):
                if path.name.startswith(TEMP_PREFIX) or not path.is_file():
                    continue
                stat = path.stat()
                yield ObjectInfo(
                    path.relative_to(self.root).as_posix(), stat.st_size, stat.st_mtime_ns // 10**6
                )
            return
        start = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = (
                self._s3()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=self.bucket, Prefix=start)
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(
                        str(obj["Key"])[len(start) :],
                        int(obj["Size"]),
                        int(obj["LastModified"].timestamp() * 1000),
                    )
        except DatasetError:
            raise
        except Exception as exc:  # botocore raises many kinds
            raise DatasetError(f"cannot list {self.url}: {_describe(exc)}", hint=_HINT) from None

    def read(self, key: str) -> bytes:
        if self.root is not None:
            try:
                return (self.root / key).read_bytes()
            except OSError as exc:
                raise DatasetError(f"cannot read {self.url}/{key}: {exc}", hint=_HINT) from None
        try:
            body = self._s3().get_object(Bucket=self.bucket, Key=self._s3_key(key))["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()
        except Exception as exc:
            raise DatasetError(
                f"cannot read {self.url}/{key}: {_describe(exc)}", hint=_HINT
            ) from None

    def uri(self, key: str) -> str:
        """A URL of the object that pyarrow and Ray Data understand."""
        if self.root is not None:
            return str(self.root / key)
        return f"s3://{self.bucket}/{self._s3_key(key)}"


def _describe(exc: BaseException) -> str:
    from models.updates.s3 import _describe as describe

    return describe(exc)
