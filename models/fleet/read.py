"""Reading the retraining files: locally with pyarrow, or with Ray Data on a cluster.

Both engines end in the same canonical table (:func:`models.fleet.data.canonical`), so
whatever reads the files, training sees the same rows in the same order. Ray Data reads
and decodes the files in parallel tasks where the data lives (:func:`read_ray`); the
normalised rows come back to the driver, which is what bounds the fleet size one run can
take (see docs/fleet.md).
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
#: Ray Data read tasks per CPU of the cluster.
READ_TASKS_PER_CPU = 4


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


def decode(
    body: bytes, site: str, agent: str, key: str, url: str, sensors: Sequence[str]
) -> pa.Table:
    """One retraining file's bytes as normalised fleet rows (both engines run this)."""
    import pyarrow.parquet as pq

    try:
        raw = pq.read_table(io.BytesIO(body))
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        raise DatasetError(
            f"cannot read {url}/{key} as Parquet: {exc}",
            hint="remove or re-upload the damaged object",
        ) from None
    return normalise(raw, site, agent, sensors)


def read_local(
    store: Store,
    entries: Sequence[Entry],
    sensors: Sequence[str],
    progress: ReadProgress | None = None,
) -> ReadResult:
    started = time.perf_counter()
    tables = []
    for k, entry in enumerate(entries):
        body = store.read(entry.key)
        tables.append(decode(body, entry.site, entry.agent, entry.key, store.url, sensors))
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
    if endpoint is not None:
        scheme, _, endpoint = endpoint.partition("://")
    else:
        scheme = "https"
    # Keys given here travel with the file system to the Ray tasks (on other nodes the
    # environment may lack them); without them each node uses its own credential chain.
    return fs.S3FileSystem(
        access_key=os.environ.get("AWS_ACCESS_KEY_ID") or None,
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
        session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
        endpoint_override=endpoint,
        region=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        scheme=scheme,
    )


def read_ray(store: Store, entries: Sequence[Entry], sensors: Sequence[str]) -> ReadResult:
    """Read with Ray Data on the Ray instance already initialised.

    The files are fetched by ``ray.data.read_binary_files`` and decoded by
    :func:`decode` inside the Ray tasks, the same function the local reader runs.
    ``ray.data.read_parquet`` gives the same rows but, in Ray 2.60, spends about 40 ms
    of planning per file: 22 s against 1.2 s for the 547 one-hour files of the
    end-to-end test (docs/fleet.md), and a fleet's retraining data is many small files.
    """
    import pyarrow as pa
    import ray

    from models.fleet.data import schema

    started = time.perf_counter()
    if not entries:
        return ReadResult(canonical([], sensors), 0, 0, 0.0, "ray", 1)
    paths = [store.uri(e.key) for e in entries]
    if store.root is None:
        filesystem = _filesystem(store)
        paths = [p.removeprefix("s3://") for p in paths]
    else:
        filesystem = None
    owners = {p: (e.site, e.agent, e.key) for p, e in zip(paths, entries, strict=True)}
    wanted = list(sensors)
    url = store.url  # the closure goes to Ray tasks: no S3 client (not picklable) in it

    def to_fleet(batch: pa.Table) -> pa.Table:
        tables = []
        for path, body in zip(
            batch.column("path").to_pylist(), batch.column("bytes").to_pylist(), strict=True
        ):
            site, agent, key = owners[str(path)]
            tables.append(decode(body, site, agent, key, url, wanted))
        return pa.concat_tables(tables) if tables else schema(wanted).empty_table()

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    readers = max(1, int(resources.get("CPU", 1)))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Retraining files are small (one asset-hour each): a read task per file would
    # spend its time scheduling, so each reader takes a share of the files.
    dataset = ray.data.read_binary_files(
        paths,
        filesystem=filesystem,
        include_paths=True,
        override_num_blocks=min(len(paths), readers * READ_TASKS_PER_CPU),
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
