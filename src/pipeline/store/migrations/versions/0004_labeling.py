"""Labeling: the relabel queue (what was picked, why, and where it is) and the labels that came back.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "relabel_queue",
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("project", sa.String(32), nullable=False),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("priority", sa.Float, nullable=False),
        sa.Column("prob_abnormal", sa.Float),
        sa.Column("picked_for", sa.Date, nullable=False),
        sa.Column("picked_at", UTC_TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("task_id", sa.Integer),
        sa.Column("pushed_at", UTC_TS),
        sa.Column("labeled_at", UTC_TS),
        sa.PrimaryKeyConstraint("study_id", name="pk_relabel_queue"),
    )
    op.create_index("ix_relabel_queue_picked_for", "relabel_queue", ["picked_for"])
    op.create_index("ix_relabel_queue_status_project", "relabel_queue", ["status", "project"])
    op.create_table(
        "labels",
        sa.Column("annotation_id", sa.Integer, nullable=False),
        sa.Column("task_id", sa.Integer, nullable=False),
        sa.Column("project", sa.String(32), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("annotator", sa.String(256), nullable=False),
        sa.Column("abnormal", sa.Boolean),
        sa.Column("findings", sa.String(256), nullable=False),
        sa.Column("unusable", sa.Boolean, nullable=False),
        sa.Column("unusable_reasons", sa.String(256), nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.Column("synced_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("annotation_id", name="pk_labels"),
    )
    op.create_index("ix_labels_task_id", "labels", ["task_id"])
    op.create_index("ix_labels_study_id", "labels", ["study_id"])


def downgrade() -> None:
    op.drop_table("labels")
    op.drop_table("relabel_queue")
