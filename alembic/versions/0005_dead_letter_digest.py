"""dead letters keyed by content, so a redelivered rejected message is stored once

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00

A QoS 1 message refused and committed, then redelivered because the agent died
before its acknowledgement, used to be stored a second time. ``digest`` is the
sha256 of what identifies a refused message (topic, reason, stored payload and its
size as received); a unique index on it lets the writer ``INSERT OR IGNORE``.
Rows stored twice by earlier versions are the very duplicates this removes: the
first of each (lowest id, earliest received) is kept. The digest function is frozen
here on purpose, as ``agent.storage.writer.dead_letter_digest`` was when written.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: Rows hashed per round trip: bounds the memory of migrating a big table.
_CHUNK_ROWS = 2000


def _digest(topic: str, reason: str, payload: bytes, payload_size: int) -> str:
    h = hashlib.sha256()
    for part in (topic.encode(), reason.encode(), str(payload_size).encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    h.update(payload)
    return h.hexdigest()


def upgrade() -> None:
    # A plain ADD COLUMN: a batch rebuild of the table would trip over the v_dead_letters
    # view (SQLite checks views when the rebuilt table is renamed into place).
    op.add_column("dead_letters", sa.Column("digest", sa.String(length=64), nullable=True))
    conn = op.get_bind()
    last_id = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT id, topic, reason, payload, payload_size FROM dead_letters "
                "WHERE id > :last ORDER BY id LIMIT :n"
            ),
            {"last": last_id, "n": _CHUNK_ROWS},
        ).all()
        if not rows:
            break
        conn.execute(
            sa.text("UPDATE dead_letters SET digest = :digest WHERE id = :id"),
            [
                {"id": r.id, "digest": _digest(r.topic, r.reason, bytes(r.payload), r.payload_size)}
                for r in rows
            ],
        )
        last_id = rows[-1].id
    conn.execute(
        sa.text(
            "DELETE FROM dead_letters WHERE id NOT IN "
            "(SELECT min(id) FROM dead_letters GROUP BY digest)"
        )
    )
    op.create_index("ix_dead_letters_digest", "dead_letters", ["digest"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_dead_letters_digest", table_name="dead_letters")
    # DROP COLUMN (SQLite 3.35+) rather than a batch rebuild, for the same view.
    op.execute("ALTER TABLE dead_letters DROP COLUMN digest")
