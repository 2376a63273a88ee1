"""`edgewatch bench storage`: what it reports is what it wrote."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from agent import blocks
from agent import schema as t
from agent.bench import BATCH_READINGS, storage_bench
from agent.sqlite import open_engine


def test_the_storage_bench_writes_every_reading_it_counts(tmp_path: Path) -> None:
    figures = storage_bench(
        tmp_path, assets=5, readings=5_000, per_commit=1_000, prediction_every=10
    )
    assert figures.readings == 5_000
    assert figures.readings_per_commit == 1_000
    assert figures.commits == 5
    assert figures.readings_per_s > 0 and figures.file_bytes_per_reading > 0
    engine = open_engine(tmp_path / "storage.db", create=False)
    with engine.connect() as conn:
        assert blocks.count_readings(conn) == 5_000
        # One block per asset and transaction: 5 assets x 5 commits.
        assert conn.execute(select(func.count()).select_from(t.reading_blocks)).scalar() == 25
        assert conn.execute(select(func.count()).select_from(t.predictions)).scalar() == 500
    engine.dispose()
    assert BATCH_READINGS == 100
