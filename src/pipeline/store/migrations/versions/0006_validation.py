"""Fixed validation test sets and the audit trail of model roles (validation, approval, promotion, rollback).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "test_sets",
        sa.Column("test_set_hash", sa.String(32), nullable=False),
        sa.Column("name", sa.String(96), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("n_items", sa.Integer, nullable=False),
        sa.Column("n_abnormal", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("test_set_hash", name="pk_test_sets"),
    )
    op.create_index("ix_test_sets_name", "test_sets", ["name"])
    op.create_table(
        "test_set_items",
        sa.Column("test_set_hash", sa.String(32), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("dicom_uri", sa.Text, nullable=False),
        sa.Column("label", sa.SmallInteger, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("patient_key", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.CheckConstraint("label IN (0, 1)", name="ck_test_set_items_label_binary"),
        sa.ForeignKeyConstraint(
            ["test_set_hash"],
            ["test_sets.test_set_hash"],
            name="fk_test_set_items_test_set_hash_test_sets",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("test_set_hash", "study_id", name="pk_test_set_items"),
    )
    op.create_table(
        "model_events",
        sa.Column("event_id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_model_events"),
    )
    op.create_index("ix_model_events_at", "model_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_model_events_at", table_name="model_events")
    op.drop_table("model_events")
    op.drop_table("test_set_items")
    op.drop_index("ix_test_sets_name", table_name="test_sets")
    op.drop_table("test_sets")
