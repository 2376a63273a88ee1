"""Truth files as the simulators write them, read the way `evaluate anomaly` reads labels."""

from __future__ import annotations

from pathlib import Path

from agent.reporting.live_eval import read_truth


def test_a_fleet_runs_fault_names_are_labels(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text(
        "asset,ts,seq,fault,rul,sensor_fault\n"
        "comp-001,10.0,0,none,inf,\n"
        "comp-001,11.0,1,valve_leak,5.0,\n"
        "comp-002,10.0,2,none,inf,\n"
        "comp-001,9.0,3,none,inf,\n"
    )
    table = read_truth(truth, "fault")
    ts, flags = table["comp-001"]
    assert ts.tolist() == [9000, 10000, 11000]  # ordered by time
    assert flags.tolist() == [False, False, True]
    assert table["comp-002"][1].tolist() == [False]
    numeric = tmp_path / "numeric.csv"
    numeric.write_text("asset,ts,anomaly\nr,1.0,0\nr,2.0,1\n")
    assert read_truth(numeric, "anomaly")["r"][1].tolist() == [False, True]
