"""Reading the retraining files: locally with pyarrow, or with Ray Data on a cluster.

Both engines end in the same canonical table (:func:`models.fleet.data.canonical`), so
whatever reads the files, training sees the same rows in the same order. Ray Data reads
the Parquet files in parallel tasks (``ray.data.read_parquet``) where the data lives;
the normalised rows come back to the driver, which is what bounds the fleet size one
run can take (see docs/fleet.md).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.errors import DatasetError
from models.fleet.catalog import Entry
from models.fleet.data import canonical, normalise
from models.fleet.store import Store

if TYPE_CHECKING:
    import pyarrow as pa

ReadProgress = Callable[[int, int], None]


@dataclass
class ReadResult:
    table: pa.Table
    files: int
    bytes: int
    seconds: float
    engine: str
    #: Parallel readers (local: 1; Ray: the cluster's CPUs when the read ran).
    readers: int

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)

    def throughput(self) -> dict[str, float]:
        per_s = self.rows / self.seconds if self.seconds > 0 else 0.0
        return {
            "rows": float(self.rows),
            "seconds": self.seconds,
            "rows_per_s": per_s,
            "rows_per_s_per_reader": per_s / max(self.readers, 1),
            "readers": float(self.readers),
        }


def read_local(
    store: Store,
    entries: Sequence[Entry],
    sensors: Sequence[str],
    progress: ReadProgress | None = None,
) -> ReadResult:
    import pyarrow.parquet as pq

    started = time.perf_counter()
    tables = []
    for k, entry in enumerate(entries):
        try:
            raw = pq.read_table(io.BytesIO(store.read(entry.key)))
        except DatasetError:
            raise
        except Exception as exc:  # pyarrow raises several kinds for a damaged file
            raise DatasetError(
                f"cannot read {store.url}/{entry.key} as Parquet: {exc}",
                hint="remove or re-upload the damaged object",
            ) from None
        tables.append(normalise(raw, entry.site, entry.agent, sensors))
        if progress is not None:
            progress(k + 1, len(entries))
    table = canonical(tables, sensors)
    return ReadResult(
        table, len(entries), sum(e.size for e in entries), time.perf_counter() - started, "local", 1
    )


def _filesystem(store: Store) -> Any:
    """pyarrow's S3 file system configured like :func:`models.updates.s3.client`."""
    import os

    from pyarrow import fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    return fs.S3FileSystem(
        endpoint_override=endpoint,
        region=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        scheme="http" if endpoint and endpoint.startswith("http://") else "https",
    )


def read_ray(store: Store, entries: Sequence[Entry], sensors: Sequence[str]) -> ReadResult:
    """Read with ``ray.data.read_parquet`` on the Ray instance already initialised."""
    import pyarrow as pa
    import ray

    started = time.perf_counter()
    if not entries:
        return ReadResult(canonical([], sensors), 0, 0, 0.0, "ray", 1)
    paths = [store.uri(e.key) for e in entries]
    if store.root is None:
        filesystem = _filesystem(store)
        paths = [p.removeprefix("s3://") for p in paths]
    else:
        filesystem = None
    owners = {p: (e.site, e.agent) for p, e in zip(paths, entries, strict=True)}
    wanted = list(sensors)

    def to_fleet(batch: pa.Table) -> pa.Table:
        found = [owners[str(p)] for p in batch.column("path").to_pylist()]
        site = pa.array([s for s, _ in found], pa.string())
        agent = pa.array([a for _, a in found], pa.string())
        return normalise(batch, site, agent, wanted)

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    readers = max(1, int(resources.get("CPU", 1)))
    dataset = ray.data.read_parquet(
        paths, filesystem=filesystem, include_paths=True, partitioning=None
    ).map_batches(to_fleet, batch_format="pyarrow", batch_size=None)
    try:
        blocks = [ray.get(ref) for ref in dataset.to_arrow_refs()]
    except Exception as exc:  # Ray wraps the reader's error in its own types
        raise DatasetError(
            f"Ray Data could not read the retraining files under {store.url}: {exc}",
            hint="check that every Ray node can reach the data (and AWS_* settings for S3)",
        ) from None
    table = canonical([b for b in blocks if b.num_rows], sensors)
    return ReadResult(
        table,
        len(entries),
        sum(e.size for e in entries),
        time.perf_counter() - started,
        "ray",
        readers,
    )
