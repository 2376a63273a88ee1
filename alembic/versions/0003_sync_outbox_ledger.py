"""sync: outbox object keys and files, loss ledger, sync state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "object_key",
                sa.String(length=512),
                nullable=True,
                comment="key below the target's prefix",
            )
        )
        batch_op.add_column(
            sa.Column("path", sa.Text(), nullable=True, comment="body file below <data_dir>/outbox")
        )
        batch_op.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))

    op.create_table(
        "sync_state",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value_json", sa.Text(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_sync_state")),
    )
    op.create_table(
        "loss_ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("first_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_ms", sa.BigInteger(), nullable=True),
        sa.Column("detail_json", sa.Text(), server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loss_ledger")),
    )
    with op.batch_alter_table("loss_ledger", schema=None) as batch_op:
        batch_op.create_index("ix_loss_ledger_time", ["ts_ms"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("loss_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_loss_ledger_time")
    op.drop_table("loss_ledger")
    op.drop_table("sync_state")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("sha256")
        batch_op.drop_column("path")
        batch_op.drop_column("object_key")
