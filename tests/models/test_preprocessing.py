from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.errors import DatasetError
from models.preprocessing import (
    Scaler,
    constant_columns,
    load_cmapss,
    pad_front,
    rul_targets,
    sliding_windows,
    split_units,
    truncate_units,
    windows_ending_at,
)


def test_windows_shape_and_content() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    w = sliding_windows(x, 4, hop=2)
    assert w.shape == (4, 2, 4)
    assert w[0, 0].tolist() == [0, 2, 4, 6]
    assert w[-1, 1].tolist() == [13, 15, 17, 19]
    assert np.array_equal(windows_ending_at(x, [3], 4)[0], w[0])


def test_short_series_is_edge_padded_not_dropped() -> None:
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    assert pad_front(x, 4)[:, 0].tolist() == [1, 1, 1, 2]
    w = sliding_windows(x, 4)
    assert w.shape == (1, 1, 4)
    assert windows_ending_at(x, [0], 3)[0, 0].tolist() == [1, 1, 1]


def test_rul_targets_capped() -> None:
    assert rul_targets(4, cap=2.0).tolist() == [2, 2, 1, 0]
    assert rul_targets(3, cap=100.0, end_rul=5.0).tolist() == [7, 6, 5]


def test_scaler_fit_transform_and_json() -> None:
    data = np.array([[0.0, 10.0], [2.0, 10.0]])
    s = Scaler.fit(data, "minmax")
    assert s.transform(data).tolist() == [[0.0, 0.0], [1.0, 0.0]]
    assert Scaler.from_json(s.to_json()) == s
    with pytest.raises(DatasetError):
        Scaler.from_json({"kind": "zscore", "offset": [0.0], "scale": [0.0]})


def test_constant_columns_include_two_level_flicker() -> None:
    data = np.array([[1.0, 5.0, 0.1], [1.0, 5.1, 0.2], [1.0, 5.0, 0.3]])
    assert constant_columns(data) == [0, 1]


def _write_cmapss(path: Path, lengths: list[int]) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for unit, n in enumerate(lengths, start=1):
        for cycle in range(1, n + 1):
            rows.append([unit, cycle, *rng.normal(size=24).round(4)])
    path.write_text("\n".join(" ".join(f"{v:g}" for v in r) + " " for r in rows) + "\n")


def test_load_cmapss_any_file_in_format(tmp_path: Path) -> None:
    f = tmp_path / "test_FDX.txt"
    _write_cmapss(f, [5, 3])
    truth = tmp_path / "RUL_FDX.txt"
    truth.write_text("10\n20\n")
    data = load_cmapss(f, truth)
    assert [u.n_cycles for u in data.units] == [5, 3]
    assert [u.end_rul for u in data.units] == [10.0, 20.0]
    assert len(data.columns) == 24
    truth.write_text("10\n")
    with pytest.raises(DatasetError, match="2 units"):
        load_cmapss(f, truth)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(DatasetError, match="columns"):
        load_cmapss(bad)


def test_split_by_unit_and_truncation(tmp_path: Path) -> None:
    f = tmp_path / "train.txt"
    _write_cmapss(f, [40, 50, 60, 70, 80])
    units = load_cmapss(f).units
    train, val = split_units(units, 0.4, seed=1)
    assert {u.unit_id for u in train}.isdisjoint({u.unit_id for u in val})
    assert len(train) + len(val) == 5
    cuts = truncate_units(val, seed=2, cuts_per_unit=3)
    assert len(cuts) == 3 * len(val)
    for c in cuts:
        full = next(u for u in units if u.unit_id == c.unit_id)
        assert c.n_cycles + c.end_rul == full.n_cycles
        assert c.n_cycles >= 31
