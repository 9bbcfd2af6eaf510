"""The audit trail of amended rows: what a newer report replaced.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "amendments",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("replaced", sa.Text, nullable=False),
        sa.Column("replaced_digest", sa.String(64), nullable=False),
        sa.Column("amended_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_amendments"),
        sa.UniqueConstraint("table_name", "study_id", "source", "replaced_digest", name="uq_amendments_row"),
    )
    op.create_index("ix_amendments_study_id", "amendments", ["study_id"])


def downgrade() -> None:
    op.drop_index("ix_amendments_study_id", table_name="amendments")
    op.drop_table("amendments")
