"""The dashboard over real HTTP: pages, the JSON API, the security rules, feedback."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from urllib.parse import urlencode

import orjson
import pytest
from sqlalchemy import insert

from agent import schema as t
from agent.dashboard import data
from agent.dashboard.server import listen_of
from agent.errors import ConfigError, EdgewatchError
from agent.settings import load_settings
from agent.sqlite import open_engine
from tests.agent.dashboard.conftest import TOKEN, Served, serve

BEARER = {"Authorization": f"Bearer {TOKEN}"}


def _csrf(page: bytes) -> str:
    found = re.search(rb'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "the page has no CSRF token"
    return found.group(1).decode()


def _alert_ids(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM alerts ORDER BY id")]


def test_pages_and_api_read_without_login_on_loopback(local: Served) -> None:
    status, headers, page = local.request("/")
    assert status == 200
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert b"pump-001" in page and b"pump-008" in page
    status, fleet = local.json("/api/fleet")
    assert status == 200
    assert {a["asset"] for a in fleet["assets"]} == {f"pump-{i:03d}" for i in range(1, 9)}
    # Worst first: an alerting asset (the bench's failing pump) leads.
    assert fleet["assets"][0]["state"] == "alerting"
    assert fleet["assets"][0]["open_incidents"] or fleet["assets"][0]["ratio"] > 1
    first = fleet["assets"][0]
    assert first["rul_low"] <= first["rul"] <= first["rul_high"]
    assert fleet["model"]["version"] == "pump-cnn-bench"
    assert fleet["rul_unit"] == "h"
    for path in ("/alerts", "/assets/pump-001", "/static/chart.js", "/static/dashboard.js"):
        assert local.request(path)[0] == 200, path


def test_asset_series_are_bounded_and_follow_the_zoom(local: Served) -> None:
    status, day = local.json("/api/assets/pump-001")
    assert status == 200
    assert day["until_ms"] - day["since_ms"] == data.DEFAULT_SPAN_MS
    p, s = day["predictions"], day["sensors"]
    assert 0 < len(p["ts_ms"]) <= data.MAX_POINTS
    assert 0 < len(s["ts_ms"]) <= data.MAX_POINTS
    assert set(s["values"]) >= {"bearing_temp_c", "flow_m3_h"}
    assert all(len(v) == len(s["ts_ms"]) for v in s["values"].values())
    # Zoom into one hour: every point inside it, finer buckets than the day's.
    since = day["since_ms"] + 6 * 3_600_000
    until = since + 3_600_000
    status, hour = local.json(f"/api/assets/pump-001?since={since}&until={until}")
    assert status == 200
    assert hour["bucket_ms"] < day["bucket_ms"]
    assert all(since <= x < until for x in hour["predictions"]["ts_ms"] + hour["sensors"]["ts_ms"])
    # Readings every 60 s, buckets of 6 s: one point per reading.
    assert len(hour["sensors"]["ts_ms"]) == 60
    assert local.json("/api/assets/nope")[0] == 404
    assert local.json(f"/api/assets/pump-001?since={until}&until={since}")[0] == 400
    assert local.json("/api/assets/pump-001?since=yesterday")[0] == 400


def test_writes_need_the_token(local: Served) -> None:
    alert_id = _alert_ids(local.db)[0]
    body = orjson.dumps({"label": "fault", "note": "bearing", "by": "ana"})
    json_type = {"Content-Type": "application/json"}
    status, answer = local.json(
        f"/api/alerts/{alert_id}/label", method="POST", data=body, headers=json_type
    )
    assert status == 401 and "token" in answer["error"]
    wrong = {**json_type, "Authorization": "Bearer nope"}
    assert (
        local.json(f"/api/alerts/{alert_id}/label", method="POST", data=body, headers=wrong)[0]
        == 401
    )
    status, answer = local.json(
        f"/api/alerts/{alert_id}/label", method="POST", data=body, headers={**json_type, **BEARER}
    )
    assert status == 200
    assert (answer["label"], answer["note"], answer["by"]) == ("fault", "bearing", "ana")
    assert "/gw-test/label/" in answer["key"]
    status, alert = local.json(f"/api/alerts/{alert_id}")
    assert (alert["label"], alert["labelled_by"], alert["acknowledged"]) == ("fault", "ana", True)
    bad = orjson.dumps({"label": "broken"})
    status, answer = local.json(
        f"/api/alerts/{alert_id}/label", method="POST", data=bad, headers={**json_type, **BEARER}
    )
    assert status == 400 and "unknown label 'broken'" in answer["error"]
    status, answer = local.json("/api/alerts/999999/ack", method="POST", headers=BEARER)
    assert status == 400 and "no alert with id 999999" in answer["error"]


def test_forms_need_a_login_and_the_csrf_token(local: Served) -> None:
    alert_id = _alert_ids(local.db)[0]
    _, _, page = local.request("/login")
    csrf = _csrf(page)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    label = urlencode({"csrf": csrf, "label": "maintenance", "note": "planned", "by": "bo"})
    # Not logged in: refused.
    status, _, _ = local.request(
        f"/alerts/{alert_id}/label", method="POST", data=label.encode(), headers=form
    )
    assert status == 401
    # A wrong token does not log in; the right one does.
    login = {"csrf": csrf, "next": "/alerts"}
    wrong = urlencode({**login, "token": "guess"}).encode()
    assert local.request("/login", method="POST", data=wrong, headers=form)[0] == 401
    good = urlencode({**login, "token": TOKEN}).encode()
    status, headers, _ = local.request("/login", method="POST", data=good, headers=form)
    assert status == 303 and headers["location"] == "/alerts"
    # Logged in, but the form's CSRF token missing or forged: refused.
    forged = urlencode({"csrf": "0" * 64, "label": "fault"}).encode()
    assert (
        local.request(f"/alerts/{alert_id}/label", method="POST", data=forged, headers=form)[0]
        == 403
    )
    # Posted from another site (Origin), even with the cookie: refused.
    status, _, _ = local.request(
        f"/alerts/{alert_id}/label",
        method="POST",
        data=label.encode(),
        headers={**form, "Origin": "http://evil.example"},
    )
    assert status == 403
    status, headers, _ = local.request(
        f"/alerts/{alert_id}/label", method="POST", data=label.encode(), headers=form
    )
    assert status == 303 and headers["location"] == f"/alerts#alert-{alert_id}"
    ack = urlencode({"csrf": csrf}).encode()
    assert local.request(f"/alerts/{alert_id}/ack", method="POST", data=ack, headers=form)[0] == 303
    with sqlite3.connect(local.db) as conn:
        row = conn.execute(
            "SELECT label, label_note, labelled_by, acknowledged FROM v_alerts WHERE alert_id = ?",
            (alert_id,),
        ).fetchone()
        items = conn.execute("SELECT count(*) FROM outbox WHERE kind = 'label'").fetchone()[0]
    assert row == ("maintenance", "planned", "bo", 1)
    assert items >= 1
    # A redirect target is a path on this server, never another site.
    evil = urlencode({"csrf": csrf, "token": TOKEN, "next": "//evil.example/x"}).encode()
    assert local.request("/login", method="POST", data=evil, headers=form)[1]["location"] == "/"


def test_a_non_loopback_dashboard_needs_the_token_to_read(exposed: Served) -> None:
    status, headers, _ = exposed.request("/")
    assert status == 303 and headers["location"].startswith("/login?next=")
    assert exposed.json("/api/fleet")[0] == 401
    assert exposed.json("/api/fleet", headers=BEARER)[0] == 200
    _, _, page = exposed.request("/login")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    login = urlencode({"csrf": _csrf(page), "token": TOKEN, "next": "/"}).encode()
    assert exposed.request("/login", method="POST", data=login, headers=form)[0] == 303
    assert exposed.request("/")[0] == 200  # the session cookie now
    assert exposed.request("/", cookies=False)[0] == 303


def test_without_a_token_the_dashboard_is_read_only(readonly: Served) -> None:
    assert readonly.request("/")[0] == 200
    status, answer = readonly.json("/api/alerts/1/ack", method="POST", headers=BEARER)
    assert status == 403 and "read-only" in answer["error"]
    _, _, page = readonly.request("/alerts")
    assert b"Read-only" in page and b"label-form" not in page


def test_every_value_is_escaped(dashboard_db: Path) -> None:
    engine = open_engine(dashboard_db, create=False)
    evil = '<script>alert("x")</script>'
    with engine.begin() as conn:
        conn.execute(
            insert(t.assets).values(
                site="plant-a", name=evil, first_seen_ms=1, last_seen_ms=2, state="healthy"
            )
        )
    engine.dispose()
    for served in serve(dashboard_db, token=TOKEN, loopback=True):
        _, _, fleet = served.request("/")
        _, _, alerts = served.request("/alerts")
        _, fleet_api = served.json("/api/fleet")
    assert b"<script>alert" not in fleet and b"&lt;script&gt;alert(&#34;x&#34;)" in fleet
    assert b"<script>alert" not in alerts
    assert evil in {a["asset"] for a in fleet_api["assets"]}


def test_listen_address_rules() -> None:
    assert listen_of(load_settings(None, {})) is None
    local = listen_of(load_settings(None, {"dashboard": {"address": "127.0.0.1:8080"}}))
    assert local is not None and local.loopback and local.token is None
    with pytest.raises(ConfigError, match="not loopback"):
        listen_of(load_settings(None, {"dashboard": {"address": "0.0.0.0:8080"}}))
    exposed = listen_of(
        load_settings(None, {"dashboard": {"address": "0.0.0.0:8080", "token": "t"}})
    )
    assert exposed is not None and not exposed.loopback
    settings = load_settings(None, {"dashboard": {"token": "t0ps3cret"}})
    assert "t0ps3cret" not in str(settings.redacted())


def test_a_port_in_use_is_one_clear_error(local: Served, dashboard_db: Path) -> None:
    port = int(local.url.rsplit(":", 1)[1].strip("/"))
    from agent.dashboard.app import DashboardConfig
    from agent.dashboard.security import Guard
    from agent.dashboard.server import DashboardServer, Listen

    engine = open_engine(dashboard_db, create=False)
    try:
        with pytest.raises(EdgewatchError, match=f"cannot serve the dashboard on 127.0.0.1:{port}"):
            DashboardServer(
                engine,
                Listen("127.0.0.1", port, None),
                DashboardConfig(agent="x", sync=False, guard=Guard(None, loopback=True)),
            )
    finally:
        engine.dispose()
