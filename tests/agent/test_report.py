"""`edgewatch report`: the figures' structure, valid PNG and self-contained HTML."""

from __future__ import annotations

import base64
import io
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.cbook import is_math_text

from agent.errors import EdgewatchError
from agent.reporting.data import load_asset, load_fleet
from agent.reporting.figures import asset_figure, fleet_figure
from agent.reporting.render import asset_html, fleet_html, png_bytes
from agent.sqlite import open_engine
from tests.agent.hostile import MATH, NEWLINE, SENSOR, hostile
from tests.agent.seed import HOUR, NOW, seeded
from tests.conftest import CliRunner

__all__ = ["hostile", "seeded"]  # the fixtures, imported for pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_asset_figure_has_sensor_score_and_rul_panels(seeded: Path) -> None:
    engine = open_engine(seeded, create=False, read_only=True)
    try:
        data = load_asset(engine, "pump-a", NOW - 6 * HOUR, NOW, rul_alert_below=200.0)
    finally:
        engine.dispose()
    assert list(data.sensors) == ["temp_c", "vib_mm_s"]
    assert data.sensors["temp_c"].values == [41.5, 42.0]
    assert data.score.values == [1.0, 5.0, 7.5]
    assert [(a.severity, a.closed_ms is None) for a in data.alerts] == [
        ("warning", False),
        ("critical", True),
    ]
    figure = asset_figure(data)
    axes = figure.get_axes()
    assert len(axes) == 4  # two sensors, the score, the RUL
    assert "pump-a: ALERTING" in figure.get_suptitle()
    assert [ax.get_ylabel() for ax in axes[:2]] == ["temp\n(°C)", "vib\n(mm/s)"]
    # Each alert is shaded on every panel.
    assert all(len(ax.patches) == 2 for ax in axes)
    score_ax, rul_ax = axes[2], axes[3]
    threshold = next(line for line in score_ax.get_lines() if line.get_label() == "threshold")
    assert list(np.asarray(threshold.get_ydata(), dtype=float)) == [3.0, 3.0, 3.0]
    limit = next(line for line in rul_ax.get_lines() if line.get_label() == "RUL alert limit")
    assert list(np.asarray(limit.get_ydata(), dtype=float)) == [200.0, 200.0]


def test_fleet_figure_puts_the_worst_asset_on_top(seeded: Path) -> None:
    engine = open_engine(seeded, create=False, read_only=True)
    try:
        fleet = load_fleet(engine, NOW)
    finally:
        engine.dispose()
    assert [(r.asset, r.state, r.ratio) for r in fleet.rows] == [
        ("pump-a", "alerting", 2.5),
        ("pump-b", "healthy", 0.3),
    ]
    figure = fleet_figure(fleet)
    score_ax, rul_ax = figure.get_axes()
    labels = {t.get_text(): t.get_position()[1] for t in score_ax.get_yticklabels()}
    assert labels["pump-a"] > labels["pump-b"]
    assert len(score_ax.patches) == 2 and len(rul_ax.patches) == 2
    assert "2 assets, 1 alerting, 1 open alerts" in figure.get_suptitle()
    assert any("1 open alert" in t.get_text() for t in score_ax.texts)


def test_a_machine_standing_still_is_reported_stopped_with_its_rul_held(seeded: Path) -> None:
    with sqlite3.connect(seeded) as conn:
        # pump-a's newest window was not judged: it stopped after running.
        conn.execute(
            "update predictions set judged = 0 where window_end_ms = "
            "(select max(window_end_ms) from predictions where asset_id = 1)"
        )
    engine = open_engine(seeded, create=False, read_only=True)
    try:
        data = load_asset(engine, "pump-a", NOW - 6 * HOUR, NOW, rul_alert_below=None)
        fleet = load_fleet(engine, NOW)
    finally:
        engine.dispose()
    assert data.stopped
    assert [(r.asset, r.stopped) for r in fleet.rows] == [("pump-a", True), ("pump-b", False)]
    figure = asset_figure(data)
    assert "pump-a: ALERTING, STOPPED" in figure.get_suptitle()
    rul_ax = figure.get_axes()[-1]
    assert any(t.get_text().startswith("stopped: RUL held at 120") for t in rul_ax.texts)
    assert b"Stopped: the machine is not running" in asset_html(data, b"")
    assert b"<td>alerting, stopped</td>" in fleet_html(fleet, b"")


def test_the_rul_interval_is_a_band_around_the_estimate(seeded: Path) -> None:
    with sqlite3.connect(seeded) as conn:
        conn.execute("update predictions set rul_low = rul - 30, rul_high = rul + 40")
    engine = open_engine(seeded, create=False, read_only=True)
    try:
        data = load_asset(engine, "pump-a", NOW - 6 * HOUR, NOW, rul_alert_below=None)
    finally:
        engine.dispose()
    assert data.rul.values == [900.0, 400.0, 120.0]
    assert data.rul_low.values == [870.0, 370.0, 90.0]
    assert data.rul_high.values == [940.0, 440.0, 160.0]
    rul_ax = asset_figure(data).get_axes()[-1]
    (band,) = [c for c in rul_ax.collections if c.get_label() == "80 % interval"]
    lows = np.asarray(band.get_paths()[0].vertices)[:, 1]
    assert lows.min() == pytest.approx(90.0) and lows.max() == pytest.approx(940.0)


def test_unknown_asset_names_the_known_ones(seeded: Path) -> None:
    engine = open_engine(seeded, create=False, read_only=True)
    try:
        with pytest.raises(EdgewatchError, match="known assets: pump-a, pump-b"):
            load_asset(engine, "pump-zz", NOW - HOUR, NOW, rul_alert_below=None)
    finally:
        engine.dispose()


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        self._in_cell = tag == "td"

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells.append(data)


def test_cli_writes_png_and_self_contained_html(
    cli: CliRunner, seeded: Path, tmp_path: Path
) -> None:
    png = tmp_path / "pump-a.png"
    done = cli(
        "report", "--asset", "pump-a", "--since", "6h", "--out", str(png), "--db", str(seeded)
    )
    assert done.returncode == 0, done.stderr
    assert "report written to" in done.stdout
    assert png.read_bytes().startswith(PNG_MAGIC)
    height, width, _ = mpimg.imread(png).shape
    assert width > 1000 and height > 500

    page = tmp_path / "fleet.html"
    done = cli("report", "--fleet", "--out", str(page), "--db", str(seeded))
    assert done.returncode == 0, done.stderr
    parsed = _Page()
    parsed.feed(page.read_text())
    assert len(parsed.images) == 1
    prefix = "data:image/png;base64,"
    assert parsed.images[0].startswith(prefix)
    image = base64.b64decode(parsed.images[0][len(prefix) :])
    assert image.startswith(PNG_MAGIC)
    assert mpimg.imread(io.BytesIO(image)).shape[1] > 1000
    assert {"pump-a", "pump-b", "alerting", "healthy"} <= set(parsed.cells)


def test_cli_usage_errors(cli: CliRunner, seeded: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "x.png")
    neither = cli("report", "--out", out, "--db", str(seeded))
    assert neither.returncode == 2
    both = cli("report", "--fleet", "--asset", "pump-a", "--out", out, "--db", str(seeded))
    assert both.returncode == 2
    unknown = cli("report", "--asset", "nope", "--out", out, "--db", str(seeded))
    assert unknown.returncode == 1
    assert "no asset named 'nope'" in unknown.stderr
    assert not Path(out).exists()


def test_cli_draws_publisher_text_as_text(cli: CliRunner, hostile: Path, tmp_path: Path) -> None:
    # Asset and sensor names come from publishers: "$\\x$" is mathtext matplotlib cannot
    # parse, and drawing it used to fail the whole report. A matplotlibrc where the
    # operator runs the command must not turn the names into LaTeX input either.
    (tmp_path / "matplotlibrc").write_text("text.usetex: True\n")
    fleet = tmp_path / "fleet.png"
    done = cli("report", "--fleet", "--out", str(fleet), "--db", str(hostile))
    assert done.returncode == 0, done.stderr
    assert fleet.read_bytes().startswith(PNG_MAGIC)
    for i, name in enumerate((MATH, NEWLINE, "[/]")):
        out = tmp_path / f"asset-{i}.html"
        args = ("--asset", name, "--since", "2h", "--out", str(out), "--db", str(hostile))
        done = cli("report", *args)
        if name == "[/]":
            assert done.returncode == 1 and "no asset named '[/]'" in done.stderr
            continue
        assert done.returncode == 0, done.stderr
        assert "report written to" in done.stdout


def test_figures_show_names_as_written(hostile: Path) -> None:
    engine = open_engine(hostile, create=False, read_only=True)
    try:
        fleet = load_fleet(engine, NOW)
        asset = load_asset(engine, MATH, NOW - 2 * HOUR, NOW, rul_alert_below=None)
    finally:
        engine.dispose()
    fleet_png = png_bytes(fleet_figure(fleet))
    asset_png = png_bytes(asset_figure(asset))
    assert fleet_png.startswith(PNG_MAGIC) and asset_png.startswith(PNG_MAGIC)
    # What the figure draws is the name as published, one line, not a formula.
    labels = [shown(t.get_text()) for t in fleet_figure(fleet).get_axes()[0].get_yticklabels()]
    assert MATH in labels and "a\\nb" in labels
    figure = asset_figure(asset)
    assert shown(figure.get_suptitle()).startswith(f"{MATH}: ALERTING")
    assert SENSOR.removesuffix("_c") in shown(figure.get_axes()[0].get_ylabel())
    assert "\n" not in figure.get_suptitle()


def shown(text: str) -> str:
    """What matplotlib draws for ``text``: plain text, with ``\\$`` as a dollar sign."""
    assert not is_math_text(text), text
    return text.replace("\\$", "$")


def test_a_machine_no_rul_model_covers_shows_a_dash_not_a_number() -> None:
    from agent.reporting.data import FleetData, FleetRow

    fleet = FleetData(
        [
            FleetRow("pump-a", "healthy", 1.0, 2.0, 12.5, 0, NOW),
            FleetRow("comp-a", "healthy", 1.0, 4.0, None, 0, NOW),
        ],
        "h",
        NOW,
    )
    _, rul_ax = fleet_figure(fleet).get_axes()
    texts = [t.get_text().strip() for t in rul_ax.texts]
    assert texts == ["12.5", "- (no RUL model)"]
