"""Write a report figure as PNG, or as one self-contained HTML file (image inlined)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import EdgewatchError
from agent.reporting.data import AssetData, FleetData
from agent.reporting.figures import local, plain_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    with plain_text():
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write(path: Path, content: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(content)
        tmp.replace(path)  # never a half-written report where the old one was
    except OSError as exc:
        raise EdgewatchError(
            f"cannot write {path}: {exc.strerror or exc}", hint="choose a writable --out path"
        ) from None


def _page(title: str, png: bytes, table: str) -> bytes:
    image = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
img {{ max-width: 100%; }}
table {{ border-collapse: collapse; margin-top: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }}
th {{ background: #f3f3f3; }}
td.num {{ text-align: right; }}
tr.bad td {{ color: #b00; font-weight: 600; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<img alt="{html.escape(title)}" src="data:image/png;base64,{image}">
{table}
</body></html>
""".encode()


def _table(headers: list[str], rows: list[tuple[list[str], bool]], numeric: set[int]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for cells, bad in rows:
        tds = "".join(
            f'<td class="num">{html.escape(c)}</td>'
            if i in numeric
            else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(cells)
        )
        body.append(f'<tr class="bad">{tds}</tr>' if bad else f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "" if value is None else format(value, spec)


def asset_html(data: AssetData, png: bytes) -> bytes:
    rows = [
        (
            [
                f"{local(a.opened_ms):%Y-%m-%d %H:%M}",
                "open" if a.closed_ms is None else f"{local(a.closed_ms):%Y-%m-%d %H:%M}",
                a.kind,
                a.severity,
                _num(a.peak_score),
            ],
            a.closed_ms is None,
        )
        for a in data.alerts
    ]
    table = (
        _table(["opened", "closed", "kind", "severity", "peak score"], rows, {4})
        if rows
        else "<p>No alerts in this range.</p>"
    )
    status = (
        f"<p>Stopped: the machine is not running; the RUL estimate holds its last running "
        f"value ({html.escape(data.state)} when it last ran).</p>"
        if data.stopped
        else ""
    )
    return _page(f"edgewatch report: {data.asset}", png, status + "<h2>Alerts</h2>" + table)


def fleet_html(fleet: FleetData, png: bytes) -> bytes:
    unit = f" ({fleet.rul_unit})" if fleet.rul_unit else ""
    rows = [
        (
            [
                r.asset,
                f"{r.state}, stopped" if r.stopped else r.state,
                _num(r.score),
                _num(r.threshold),
                _num(r.ratio, ".1f"),
                _num(r.rul, ".1f"),
                str(r.open_alerts or ""),
                "" if r.last_seen_ms is None else f"{local(r.last_seen_ms):%Y-%m-%d %H:%M}",
            ],
            r.state == "alerting",
        )
        for r in fleet.rows
    ]
    headers = [
        "asset",
        "state",
        "score",
        "threshold",
        "score/threshold",
        f"RUL{unit}",
        "open alerts",
        "last seen",
    ]
    table = _table(headers, rows, {2, 3, 4, 5, 6})
    return _page("edgewatch report: fleet health", png, table)
