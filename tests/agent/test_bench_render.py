"""``edgewatch bench``'s table: the default runs at the bundle's hop, other hops labelled apart."""

from __future__ import annotations

from rich.console import Console

from agent.bench import AgentFigures, BenchReport
from agent.cli.bench_cmd import render


def _text(report: BenchReport) -> str:
    console = Console(width=200, record=True)
    console.print(render(report))
    return console.export_text()


def _figures(backend: str, hop: int, msg_s: float) -> AgentFigures:
    return AgentFigures(backend=backend, hop=hop, windows_per_reading=1 / hop, agent_msg_s=msg_s)


def test_the_title_and_a_row_name_the_hop_the_default_runs_use() -> None:
    report = BenchReport(protocol="5", window=32, hop=1)
    report.backends["onnx"] = _figures("onnx", 1, 4321.0)
    text = _text(report)
    assert "window 32, hop 1: the bundle's" in text
    hop_row = next(line for line in text.splitlines() if "hop the agent ran at" in line)
    assert hop_row.split("│")[2].strip() == "1"
    assert "not the default" not in text


def test_extra_hops_are_rows_of_their_own_labelled_with_their_hop() -> None:
    report = BenchReport(protocol="5", window=32, hop=1)
    report.backends["onnx"] = _figures("onnx", 1, 4321.0)
    report.backends["torch"] = _figures("torch", 1, 4000.0)
    report.extra = [_figures("onnx", 8, 5555.0), _figures("torch", 8, 5000.0)]
    lines = _text(report).splitlines()
    default = next(line for line in lines if line.startswith("│ (b) agent end to end"))
    extra = next(line for line in lines if "hop 8, not the default: (b) agent end to end" in line)
    # Columns are the backends in the default runs' order; each run's figure in its own.
    assert [c.strip() for c in default.split("│")[2:4]] == ["4,321", "4,000"]
    assert [c.strip() for c in extra.split("│")[2:4]] == ["5,555", "5,000"]
    assert sum("hop 8, not the default: (b) windows scored / shed" in ln for ln in lines) == 1


def test_sparkplug_rows_give_the_ratio_to_the_json_run_of_the_same_backend() -> None:
    report = BenchReport(protocol="5", window=32, hop=1)
    report.backends["onnx"] = _figures("onnx", 1, 4000.0)
    assert "Sparkplug" not in _text(report)  # no --sparkplug run: no rows
    fig = report.backends["onnx"]
    fig.batched_readings_s = 50_000.0
    fig.sparkplug_readings_s, fig.sparkplug_batched_readings_s = 3_600.0, 45_000.0
    fig.sparkplug_lost, fig.sparkplug_batched_lost = 0, 12
    lines = _text(report).splitlines()
    ratio = next(line for line in lines if "Sparkplug B / JSON" in line)
    lost = next(line for line in lines if "Sparkplug B readings lost" in line)
    assert [c.strip() for c in ratio.split("│")[2:4]] == ["0.90 / 0.90", ">= 0.8"]
    assert lost.split("│")[2].strip() == "0 / 12"
