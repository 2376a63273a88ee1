"""What the gateways uploaded: retraining files and operator labels, by object key.

Object keys are ``[...]/<site>/<agent>/<kind>/<yyyy>/<mm>/<dd>/<asset>/<name>``
(``agent.outbox.item_key``, docs/sync.md); the key is the idempotency key of the upload,
so one fact is one key and a listing that shows a key twice (two overlapping listings,
a retried upload) is one object. Keys are parsed from the right, so the URL given may
be any prefix above the sites.

Labels are the operators' verdicts on alerts (kind ``label``, JSON, issue 20): the
newest ``labelled_ms`` per (site, agent, asset, alert_id) is in force.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from agent.errors import DatasetError
from models.fleet.store import ObjectInfo, Store

RETRAINING: Final = "retraining"
LABEL: Final = "label"
KINDS: Final = ("alert", "event", "ledger", "summary", RETRAINING, LABEL)
#: Levels of a key from the site down: site, agent, kind, yyyy, mm, dd, asset, name.
KEY_LEVELS: Final = 8
#: Operator verdicts: a false alarm or maintenance was normal operation; a fault was not.
FAULT: Final = "fault"
FALSE_ALARM: Final = "false_alarm"
MAINTENANCE: Final = "maintenance"
VERDICTS: Final = (FAULT, FALSE_ALARM, MAINTENANCE)
NORMAL_VERDICTS: Final = (FALSE_ALARM, MAINTENANCE)


@dataclass(frozen=True, slots=True)
class Entry:
    """One object of a known kind, with the levels its key names."""

    key: str
    site: str
    agent: str
    kind: str
    day: str
    asset: str
    name: str
    size: int
    modified_ms: int

    @property
    def gateway(self) -> str:
        return f"{self.site}/{self.agent}"


@dataclass(frozen=True, slots=True)
class Label:
    """An operator's verdict on one alert (the newest one counts)."""

    site: str
    agent: str
    asset: str
    alert_id: int
    label: str
    labelled_ms: int
    opened_ms: int | None = None
    closed_ms: int | None = None
    by: str = ""
    note: str = ""


def parse_key(info: ObjectInfo) -> Entry | None:
    """The entry a key names, or None for a key of no known layout (ignored)."""
    parts = info.key.split("/")
    if len(parts) < KEY_LEVELS:
        return None
    site, agent, kind, yyyy, mm, dd, asset, name = parts[-KEY_LEVELS:]
    if kind not in KINDS or not (yyyy.isdigit() and mm.isdigit() and dd.isdigit()):
        return None
    return Entry(
        info.key, site, agent, kind, f"{yyyy}-{mm}-{dd}", asset, name, info.size, info.modified_ms
    )


@dataclass
class Catalog:
    """Every object of a known kind below a prefix, one per key."""

    url: str
    entries: list[Entry]
    #: Listing rows that repeated a key already seen (counted, not read twice).
    duplicates: int = 0
    #: Objects whose key is not of the sync layout (other data below the prefix).
    ignored: int = 0
    labels: dict[tuple[str, str, str, int], Label] = field(default_factory=dict)
    #: Label objects that could not be read as the label contract (skipped, counted).
    bad_labels: int = 0

    def of_kind(self, kind: str) -> list[Entry]:
        return [e for e in self.entries if e.kind == kind]

    @property
    def retraining(self) -> list[Entry]:
        return self.of_kind(RETRAINING)

    def gateways(self) -> list[str]:
        return sorted({e.gateway for e in self.entries})

    def label_counts(self) -> dict[str, int]:
        counts = Counter(lab.label for lab in self.labels.values())
        return {v: counts.get(v, 0) for v in VERDICTS}


def dedupe(listing: Iterable[ObjectInfo]) -> tuple[list[Entry], int, int]:
    """Entries one per key (the newest listing row of a key wins), duplicates, ignored."""
    seen: dict[str, Entry] = {}
    duplicates = ignored = 0
    for info in listing:
        entry = parse_key(info)
        if entry is None:
            ignored += 1
            continue
        old = seen.get(entry.key)
        if old is not None:
            duplicates += 1
            if old.modified_ms >= entry.modified_ms:
                continue
        seen[entry.key] = entry
    return sorted(seen.values(), key=lambda e: e.key), duplicates, ignored


def parse_label(body: Mapping[str, Any]) -> Label:
    """A label object's body (the contract of issue 20); ValueError if it is not one."""
    verdict = str(body["label"])
    if verdict not in VERDICTS:
        raise ValueError(f"unknown label {verdict!r}")

    def opt_int(name: str) -> int | None:
        value = body.get(name)
        return None if value is None else int(value)

    return Label(
        site=str(body["site"]),
        agent=str(body["agent"]),
        asset=str(body["asset"]),
        alert_id=int(body["alert_id"]),
        label=verdict,
        labelled_ms=int(body["labelled_ms"]),
        opened_ms=opt_int("opened_ms"),
        closed_ms=opt_int("closed_ms"),
        by=str(body.get("by") or ""),
        note=str(body.get("note") or ""),
    )


def newest_labels(labels: Iterable[Label]) -> dict[tuple[str, str, str, int], Label]:
    """The label in force per (site, agent, asset, alert_id): the newest ``labelled_ms``
    (ties: the later verdict in :data:`VERDICTS` order, so the result never depends on
    the listing order)."""
    best: dict[tuple[str, str, str, int], Label] = {}
    for lab in labels:
        key = (lab.site, lab.agent, lab.asset, lab.alert_id)
        old = best.get(key)
        if old is None or (lab.labelled_ms, lab.label, lab.note) > (
            old.labelled_ms,
            old.label,
            old.note,
        ):
            best[key] = lab
    return best


def load_catalog(store: Store) -> Catalog:
    """List ``store`` once, deduplicate by key and read every label object."""
    entries, duplicates, ignored = dedupe(store.list())
    if not entries:
        raise DatasetError(
            f"nothing synced by edgewatch gateways under {store.url}",
            hint="point --data at the sync target (sync.target of the gateways) or a prefix above",
        )
    catalog = Catalog(store.url, entries, duplicates, ignored)
    found: list[Label] = []
    for entry in catalog.of_kind(LABEL):
        try:
            lab = parse_label(json.loads(store.read(entry.key)))
        except (ValueError, KeyError, TypeError):
            catalog.bad_labels += 1
            continue
        # Retraining rows know their gateway by the key's levels (which may be a
        # cleaned form of the name, agent.outbox.safe_part): labels are matched the same way.
        found.append(replace(lab, site=entry.site, agent=entry.agent))
    catalog.labels = newest_labels(found)
    return catalog
