"""Where a TUF repository lives and how its files are read and written.

A repository is a folder (``file:///path``) with two sub-folders:

- ``metadata/``: ``N.root.json``, ``N.targets.json``, ``N.snapshot.json`` (consistent
  snapshots: every version is a new file, never overwritten) and ``timestamp.json``,
  the one file rewritten on each publish (atomically, last);
- ``targets/``: one ``.tar.gz`` per bundle version, named ``<sha256>.<hex>.tar.gz``
  under a folder named after the bundle.

Readers that see the repository mid-publish therefore see either the old timestamp
(and the old, still present files) or the new one with every file it names.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import FetcherInterface

from agent.errors import UpdateError

METADATA = "metadata"
TARGETS = "targets"
_CHUNK = 1 << 16


def local_root(url: str, *, purpose: str) -> Path:
    """The folder of a ``file://`` repository URL; other schemes are refused."""
    parsed = urlparse(url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise UpdateError(
            f"{purpose} supports file:// and s3:// repositories, not {url!r}",
            hint="give --repo as file:///path or s3://bucket/prefix",
        )
    return Path(unquote(parsed.path))


def base_url(url: str, folder: str) -> str:
    return f"{url.rstrip('/')}/{folder}/"


class FileFetcher(FetcherInterface):
    """ngclient fetcher for ``file://`` URLs (its default fetcher speaks HTTP only).

    A missing file is a 404, as ngclient expects when it probes for the next root.
    """

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = local_root(url, purpose="the file fetcher")
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise DownloadHTTPError(f"{url} not found", 404) from None

        def chunks() -> Iterator[bytes]:
            with handle:
                while chunk := handle.read(_CHUNK):
                    yield chunk

        return chunks()


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pack(root: Path, names: Sequence[str]) -> bytes:
    """A reproducible ``.tar.gz`` of the flat files ``names`` in ``root``.

    Sorted names, zero times and owners: the same bundle always packs to the same
    bytes, so its sha256 in the targets metadata names its content.
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(names):
            data = (root / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)
