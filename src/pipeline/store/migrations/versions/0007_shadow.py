"""Shadow scores: a candidate's answers on live traffic beside the champion's, never acted on.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shadow_logs",
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("champion_version", sa.String(64), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("prob_abnormal", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("entropy", sa.Float, nullable=False),
        sa.CheckConstraint("prob_abnormal >= 0 AND prob_abnormal <= 1", name="ck_shadow_logs_prob_range"),
        sa.CheckConstraint("latency_s >= 0", name="ck_shadow_logs_latency_nonneg"),
        sa.PrimaryKeyConstraint("study_id", "model_version", name="pk_shadow_logs"),
    )
    op.create_index("ix_shadow_logs_model_version_received_at", "shadow_logs", ["model_version", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_shadow_logs_model_version_received_at", table_name="shadow_logs")
    op.drop_table("shadow_logs")
