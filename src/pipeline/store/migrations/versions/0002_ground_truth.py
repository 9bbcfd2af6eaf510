"""Ground truth of simulated studies (never read by monitoring).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ground_truth",
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("scenario", sa.String(128), nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("abnormal", sa.Boolean, nullable=False),
        sa.Column("findings", sa.String(128), nullable=False),
        sa.Column("organ_fully_captured", sa.Boolean, nullable=False),
        sa.Column("patient_age_years", sa.Float, nullable=False),
        sa.Column("patient_sex", sa.String(1), nullable=False),
        sa.Column("view", sa.String(4), nullable=False),
        sa.Column("foreign_objects", sa.String(128), nullable=False),
        sa.Column("tag_error", sa.Boolean, nullable=False),
        sa.Column("injected_failure", sa.String(32)),
        sa.PrimaryKeyConstraint("study_id", name="pk_ground_truth"),
    )
    op.create_index("ix_ground_truth_scenario_day", "ground_truth", ["scenario", "day"])


def downgrade() -> None:
    op.drop_table("ground_truth")
