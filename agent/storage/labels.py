"""Operator feedback on alerts: acknowledge, and label as fault, false alarm or maintenance.

A label is a new ``alert_labels`` row (history is kept; the newest row is the alert's
label) and, when sync is on, a ``label`` outbox item written in the same transaction,
so the cloud learns every label exactly as the gateway stored it (docs/sync.md,
"Labels"). Labelling an alert also acknowledges it when nobody had: an operator who
says what an alert was has seen it.

Acknowledging stays local (``alerts.acknowledged*``): it says someone looked, which
matters on this gateway's screens, not to a model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, Engine, and_, func, insert, select, update

from agent import outbox
from agent import schema as t
from agent.errors import EdgewatchError

LABELS: Final = t.ALERT_LABELS
#: Bounds of what an operator types (a note is a sentence or two, not a report).
MAX_NOTE_CHARS: Final = 2000
MAX_BY_CHARS: Final = 128
#: Version of the label item's JSON body (docs/sync.md).
BODY_SCHEMA: Final = "1"
#: IDs per statement when reading the labels of many alerts.
_IDS_PER_STATEMENT: Final = 500


class LabelError(EdgewatchError):
    """A label or acknowledgement that cannot be stored (unknown alert, bad label)."""


@dataclass(frozen=True, slots=True)
class Label:
    """An alert's label as stored: ``labelled_ms`` is its ``created_ms``."""

    alert_id: int
    label: str
    note: str | None
    by: str | None
    labelled_ms: int


@dataclass(frozen=True, slots=True)
class Labelled:
    label: Label
    #: The outbox item's object key (None while sync is off).
    key: str | None
    #: True when this label also acknowledged the alert.
    acknowledged: bool


@dataclass(frozen=True, slots=True)
class Acknowledged:
    alert_id: int
    acknowledged_ms: int
    by: str | None
    #: False when the alert had been acknowledged before (the first ack is kept).
    changed: bool


def _clean(value: str | None, limit: int, what: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > limit:
        raise LabelError(f"the {what} is {len(value)} characters long", hint=f"keep it to {limit}")
    return value


def _alert(conn: Connection, alert_id: int) -> Any:
    x, a = t.alerts, t.assets
    row = conn.execute(
        select(
            x.c.id,
            x.c.opened_ms,
            x.c.closed_ms,
            x.c.severity,
            x.c.acknowledged,
            x.c.acknowledged_ms,
            x.c.acknowledged_by,
            a.c.site,
            a.c.name.label("asset"),
        )
        .join(a, a.c.id == x.c.asset_id)
        .where(x.c.id == alert_id)
    ).one_or_none()
    if row is None:
        raise LabelError(
            f"no alert with id {alert_id}", hint="`edgewatch records alerts` shows their ids"
        )
    return row


def _acknowledge(conn: Connection, alert_id: int, by: str | None, now: int) -> bool:
    x = t.alerts
    done = conn.execute(
        update(x)
        .where(x.c.id == alert_id, x.c.acknowledged == 0)
        .values(acknowledged=1, acknowledged_ms=now, acknowledged_by=by)
    ).rowcount
    return bool(done)


def label_alert(
    engine: Engine,
    alert_id: int,
    label: str,
    *,
    agent: str,
    note: str | None = None,
    by: str | None = None,
    sync: bool = True,
    now_ms: int | None = None,
) -> Labelled:
    """Store ``label`` as the alert's newest label (and its outbox item when ``sync``).

    ``labelled_ms`` is the clock, raised when needed to one past the alert's newest
    label, so that the newest label is also the one with the highest time (the rule the
    cloud side applies, docs/sync.md) and every label has its own object key.
    """
    if label not in LABELS:
        raise LabelError(f"unknown label {label!r}", hint=f"one of {', '.join(LABELS)}")
    note = _clean(note, MAX_NOTE_CHARS, "note")
    by = _clean(by, MAX_BY_CHARS, "name")
    now = now_ms if now_ms is not None else outbox.now_ms()
    lab = t.alert_labels
    with engine.begin() as conn:
        alert = _alert(conn, alert_id)
        newest = conn.execute(
            select(func.max(lab.c.created_ms)).where(lab.c.alert_id == alert_id)
        ).scalar_one_or_none()
        created = now if newest is None else max(now, int(newest) + 1)
        conn.execute(
            insert(lab).values(alert_id=alert_id, label=label, note=note, by=by, created_ms=created)
        )
        acknowledged = _acknowledge(conn, alert_id, by, created)
        key = None
        if sync:
            opened = int(alert.opened_ms)
            key = outbox.enqueue_json(
                conn,
                site=str(alert.site),
                agent=agent,
                kind=outbox.LABEL,
                ts_ms=opened,
                asset=str(alert.asset),
                name=f"{outbox.iso_ms(opened)}-{alert_id}-{created}.json",
                obj=label_body(
                    site=str(alert.site),
                    agent=agent,
                    asset=str(alert.asset),
                    alert_id=alert_id,
                    opened_ms=opened,
                    closed_ms=None if alert.closed_ms is None else int(alert.closed_ms),
                    severity=str(alert.severity),
                    label=label,
                    note=note,
                    by=by,
                    labelled_ms=created,
                ),
                created_ms=created,
            )
    return Labelled(Label(alert_id, label, note, by, created), key, acknowledged)


def label_body(
    *,
    site: str,
    agent: str,
    asset: str,
    alert_id: int,
    opened_ms: int,
    closed_ms: int | None,
    severity: str,
    label: str,
    note: str | None,
    by: str | None,
    labelled_ms: int,
) -> dict[str, Any]:
    """The ``label`` item's JSON body (schema "1", docs/sync.md): exactly these keys."""
    return {
        "schema": BODY_SCHEMA,
        "site": site,
        "agent": agent,
        "asset": asset,
        "alert_id": alert_id,
        "opened_ms": opened_ms,
        "closed_ms": closed_ms,
        "severity": severity,
        "label": label,
        "note": note,
        "by": by,
        "labelled_ms": labelled_ms,
    }


def acknowledge_alert(
    engine: Engine, alert_id: int, *, by: str | None = None, now_ms: int | None = None
) -> Acknowledged:
    """Mark the alert acknowledged; the first acknowledgement (time, name) is kept."""
    by = _clean(by, MAX_BY_CHARS, "name")
    now = now_ms if now_ms is not None else outbox.now_ms()
    with engine.begin() as conn:
        _alert(conn, alert_id)
        changed = _acknowledge(conn, alert_id, by, now)
        row = _alert(conn, alert_id)
    return Acknowledged(alert_id, int(row.acknowledged_ms), row.acknowledged_by, changed)


def current_labels(conn: Connection, alert_ids: Iterable[int]) -> dict[int, Label]:
    """The newest label of each of ``alert_ids`` that has one."""
    lab = t.alert_labels
    wanted = sorted(set(alert_ids))
    out: dict[int, Label] = {}
    for start in range(0, len(wanted), _IDS_PER_STATEMENT):
        batch = wanted[start : start + _IDS_PER_STATEMENT]
        for row in conn.execute(newest_labels().where(lab.c.alert_id.in_(batch))):
            out[int(row.alert_id)] = Label(
                int(row.alert_id), str(row.label), row.note, row.by, int(row.created_ms)
            )
    return out


def newest_labels() -> Any:
    """SELECT of the newest ``alert_labels`` row per alert (join it on ``alert_id``)."""
    lab = t.alert_labels
    newer = lab.alias("newer")
    later = (
        select(newer.c.id)
        .where(
            newer.c.alert_id == lab.c.alert_id,
            (newer.c.created_ms > lab.c.created_ms)
            | and_(newer.c.created_ms == lab.c.created_ms, newer.c.id > lab.c.id),
        )
        .exists()
    )
    return select(lab.c.alert_id, lab.c.label, lab.c.note, lab.c.by, lab.c.created_ms).where(~later)


def history(conn: Connection, alert_id: int) -> list[Label]:
    """Every label the alert was given, oldest first."""
    lab = t.alert_labels
    rows = conn.execute(
        select(lab.c.label, lab.c.note, lab.c.by, lab.c.created_ms)
        .where(lab.c.alert_id == alert_id)
        .order_by(lab.c.created_ms, lab.c.id)
    ).all()
    return [Label(alert_id, str(r.label), r.note, r.by, int(r.created_ms)) for r in rows]
