"""Test set versions say why they exist, and a release manager can freeze one.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("test_sets") as batch:
        batch.add_column(sa.Column("reason", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("frozen_by", sa.String(128)))
        batch.add_column(sa.Column("frozen_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("test_sets") as batch:
        batch.drop_column("frozen_at")
        batch.drop_column("frozen_by")
        batch.drop_column("reason")
