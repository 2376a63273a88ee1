"""readable SQL views for sqlite3 and datasette users

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 23:40:00

The tables keep epoch milliseconds and asset ids (compact, fast to index); the
``v_*`` views show ISO 8601 UTC times and asset names, the same columns
``edgewatch records`` prints. The SQL is frozen here on purpose: a migration must
create the same views whatever later code says.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _iso(column: str) -> str:
    return f"strftime('%Y-%m-%dT%H:%M:%fZ', {column} / 1000.0, 'unixepoch')"


VIEWS = {
    "v_assets": f"""
        SELECT a.site, a.name AS asset, a.state,
               {_iso("a.first_seen_ms")} AS first_seen_utc,
               {_iso("a.last_seen_ms")} AS last_seen_utc,
               {_iso("a.commissioned_ms")} AS commissioned_utc,
               a.baseline_version, a.sensors AS sensors_json,
               (SELECT count(*) FROM alerts x
                 WHERE x.asset_id = a.id AND x.closed_ms IS NULL) AS open_alerts
          FROM assets a""",
    "v_readings": f"""
        SELECT a.site, a.name AS asset, {_iso("r.ts_ms")} AS ts_utc,
               {_iso("r.received_ms")} AS received_utc, r.values_json, r.ts_ms
          FROM readings r JOIN assets a ON a.id = r.asset_id""",
    "v_predictions": f"""
        SELECT a.site, a.name AS asset, {_iso("p.window_end_ms")} AS window_end_utc,
               p.anomaly_score, p.anomaly_threshold, p.is_anomaly, p.rul,
               p.model_version, {_iso("p.created_ms")} AS scored_utc, p.window_end_ms
          FROM predictions p JOIN assets a ON a.id = p.asset_id""",
    "v_alerts": f"""
        SELECT a.site, a.name AS asset, x.kind, x.severity,
               CASE WHEN x.closed_ms IS NULL THEN 'open' ELSE 'closed' END AS status,
               {_iso("x.opened_ms")} AS opened_utc, {_iso("x.closed_ms")} AS closed_utc,
               round((coalesce(x.closed_ms, CAST(strftime('%s', 'now') AS INTEGER) * 1000)
                      - x.opened_ms) / 1000.0, 1) AS duration_s,
               x.peak_score, x.last_score, x.rul_at_open, x.model_version,
               x.acknowledged, x.detail, x.opened_ms
          FROM alerts x JOIN assets a ON a.id = x.asset_id""",
    "v_events": f"""
        SELECT {_iso("e.ts_ms")} AS ts_utc, e.level, e.kind, a.name AS asset,
               e.message, e.detail_json, e.ts_ms
          FROM events e LEFT JOIN assets a ON a.id = e.asset_id""",
    "v_dead_letters": f"""
        SELECT {_iso("d.received_ms")} AS received_utc, d.reason, d.asset, d.topic,
               d.detail, d.payload_size, CAST(d.payload AS TEXT) AS payload_text,
               d.received_ms
          FROM dead_letters d""",
    "v_summaries": f"""
        SELECT a.site, a.name AS asset, {_iso("s.period_start_ms")} AS period_start_utc,
               s.period_s, s.samples, s.anomaly_rate, s.max_score, s.latest_rul,
               s.alerts_opened, s.alerts_closed, s.asset_state, s.model_version,
               s.stats_json, s.period_start_ms
          FROM summaries s JOIN assets a ON a.id = s.asset_id""",
}


def upgrade() -> None:
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
