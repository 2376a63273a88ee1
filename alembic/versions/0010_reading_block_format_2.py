"""reading blocks in format 2: values sent as decimals stored as integers

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 17:30:00

No table changes. From this revision on the agent writes reading blocks in format 2
(agent/blocks.py: a column whose values are all decimals of a few places is stored
as scaled integers, about 40 % fewer bytes for the pump's readings); blocks already
stored stay in format 1, which is still read. The revision exists so that an older
edgewatch, which reads format 1 only, refuses a database holding format-2 blocks
(a database newer than it knows) instead of failing on them. Downgrading re-encodes
every format-2 block as format 1, value for value.
"""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from alembic import op

from agent import blocks

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

#: Blocks re-encoded per statement on downgrade.
_BATCH = 256


def upgrade() -> None:
    pass


def downgrade() -> None:
    conn = op.get_bind()
    names = {
        int(set_id): tuple(str(x) for x in orjson.loads(text))
        for set_id, text in conn.exec_driver_sql("SELECT id, names_json FROM sensor_sets")
    }
    update = sa.text("UPDATE reading_blocks SET data = :data WHERE id = :id")
    after = 0
    while True:
        rows = conn.exec_driver_sql(
            "SELECT id, sensor_set_id, data FROM reading_blocks WHERE id > ? ORDER BY id LIMIT ?",
            (after, _BATCH),
        ).all()
        if not rows:
            return
        after = int(rows[-1][0])
        changed = [
            {"id": int(row_id), "data": blocks.encode(blocks.decode(data, names[int(set_id)]), 1)}
            for row_id, set_id, data in rows
            if blocks.format_of(data) != 1
        ]
        if changed:
            conn.execute(update, changed)
