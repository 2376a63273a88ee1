"""RUL live: a C-MAPSS file replayed into the real `edgewatch run` with the FD001 bundle.

A small test-format file is cut from training engines the way the official test split
is (each engine truncated at a random cycle, its true RUL in a truth file), replayed
with ``edgewatch simulate replay --format cmapss`` (default columns: the 3 settings and
all 21 sensors, more than the bundle reads) into an agent running the shipped FD001
bundle. Every engine must be predicted from the bundle's ``min_rows``-th cycle on
without commissioning, and each engine's last prediction must be what ``evaluate rul`` gives
offline on the same files (one scoring path).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.bundle import load_bundle
from models.bundles import default_bundle_path
from models.evaluate import evaluate_rul_cmapss
from tests.conftest import CliRunner
from tests.e2e.harness import AgentProcess, query, scalar, wait_until, write_config
from tests.support import Broker

FD001 = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "cmapss-fd001"
TRAIN = FD001 / "train_FD001.txt"
#: Training engines turned into test engines (a spread of lengths).
UNITS = (3, 17, 24, 42, 58, 71, 86, 99)
#: The official test split's shortest engine has 31 cycles: every engine has a window.
MIN_CYCLES = 31
DRAIN_S = 60.0


def health(db: Path) -> dict[str, object]:
    text = scalar(db, "select health_json from heartbeats")
    return dict(json.loads(text)) if text else {}


def write_test_split(folder: Path, seed: int = 18) -> tuple[Path, Path, int]:
    """``test.txt`` and ``truth.txt`` in the official format from training engines;
    returns their paths and the number of rows written."""
    raw = np.loadtxt(TRAIN, ndmin=2)
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = []
    truth: list[int] = []
    for new_id, unit in enumerate(UNITS, start=1):
        engine = raw[raw[:, 0] == unit]
        # The first engine is as short as the official split's shortest: a young asset
        # whose windows the agent front-pads, as evaluate rul pads its last window.
        cut = MIN_CYCLES if new_id == 1 else int(rng.integers(MIN_CYCLES, len(engine)))
        kept = engine[:cut].copy()
        kept[:, 0] = new_id
        rows.append(kept)
        truth.append(len(engine) - cut)
    table = np.concatenate(rows)
    test, truth_file = folder / "test.txt", folder / "truth.txt"
    fmt = ["%d", "%d"] + ["%.4f"] * 3 + ["%.4f"] * 21
    np.savetxt(test, table, fmt=fmt, delimiter=" ")
    truth_file.write_text("".join(f"{t}\n" for t in truth))
    return test, truth_file, len(table)


@pytest.mark.skipif(not TRAIN.is_file(), reason="C-MAPSS FD001 training data not available")
def test_a_cmapss_replay_is_predicted_live_as_evaluate_rul_offline(
    tmp_path: Path, mqtt_broker: Broker, cli: CliRunner
) -> None:
    test, truth, rows = write_test_split(tmp_path)
    bundle_path = default_bundle_path("cmapss-fd001")
    config = write_config(
        tmp_path / "edgewatch.toml",
        tmp_path / "data",
        mqtt_broker.port,
        model={"bundle": str(bundle_path)},
    )
    agent = AgentProcess(config=config, cwd=tmp_path)
    agent.start()
    db = tmp_path / "data" / "edgewatch.db"
    bundle = load_bundle(bundle_path)
    units = np.loadtxt(test, ndmin=2)[:, 0]
    # One prediction per cycle from the bundle's min_rows-th cycle on (hop 1).
    lengths = [int((units == u).sum()) for u in range(1, len(UNITS) + 1)]
    expected = sum(n - bundle.min_rows + 1 for n in lengths)
    try:
        done = cli(
            "--config", str(config), "simulate", "replay", str(test), "--format", "cmapss",
            "--as-fast-as-possible",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        wait_until(
            lambda: (
                (scalar(db, "select coalesce(sum(count), 0) from reading_blocks") or 0) >= rows
                and (scalar(db, "select count(*) from predictions") or 0) >= expected
            ),
            DRAIN_S,
            "every reading stored and every full window predicted",
        )
        # The replay sends the 3 settings and 21 sensors; the bundle reads 14 of them.
        extra = 3 + 21 - len(load_bundle(bundle_path).sensors)
        wait_until(
            lambda: health(db).get("sensor_values_ignored") == extra * rows,
            DRAIN_S,
            "a heartbeat counting the extra sensor values",
        )
    finally:
        assert agent.stop() == 0, agent.log_text()[-3000:]

    assert scalar(db, "select count(*) from dead_letters") == 0
    # Extras present from the first message are ignored, not a sensor change.
    assert scalar(db, "select count(*) from events where kind = 'sensor_set_changed'") == 0
    assert scalar(db, "select count(*) from predictions") == expected
    states = query(db, "select name, state from assets order by name")
    assert [name for name, _ in states] == [f"engine-{u:03d}" for u in range(1, len(UNITS) + 1)]
    assert all(state != "commissioning" for _, state in states), states

    offline = evaluate_rul_cmapss(load_bundle(bundle_path), test, truth)
    assert offline.units == len(UNITS)
    assert offline.padded_units == sum(n < bundle.window for n in lengths)
    live: list[float] = []
    for unit in offline.per_unit:
        name = f"engine-{int(unit['unit']):03d}"
        last = query(
            db,
            "select p.rul from predictions p join assets a on a.id = p.asset_id "
            "where a.name = ? order by p.window_end_ms desc limit 1",
            name,
        )
        assert last and last[0][0] is not None, f"{name} has no RUL"
        live.append(float(last[0][0]))
    np.testing.assert_allclose(
        live, [u["predicted_rul"] for u in offline.per_unit], rtol=1e-4, atol=1e-3
    )
    true = np.minimum([u["true_rul"] for u in offline.per_unit], offline.cap)
    live_rmse = float(np.sqrt(np.mean((np.asarray(live) - true) ** 2)))
    assert live_rmse == pytest.approx(offline.rmse, abs=0.1)
