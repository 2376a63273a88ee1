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


def test_the_storage_bench_counts_the_pages_each_commit_rewrites(tmp_path: Path) -> None:
    # Plant rates: each commit holds a few readings of every asset, and a prediction
    # for each; the WAL pages it writes are counted per table or index.
    figures = storage_bench(
        tmp_path, assets=5, readings=5_000, per_commit=50, prediction_every=1, per_message=10
    )
    assert figures.readings == 5_000
    assert (figures.readings_per_message, figures.readings_per_commit) == (10, 50)
    pages = figures.pages_per_commit
    # Every commit writes a block per asset and a prediction per reading: both
    # tables and the predictions' unique index get pages in every commit.
    assert pages["reading_blocks"] >= 1
    assert pages["predictions"] >= 1
    assert pages["sqlite_autoindex_predictions_1"] >= 1
    assert sum(pages.values()) < 100
