"""Dataset snapshots (frozen, content-hashed training sets) and a pseudonymous patient key on studies.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("studies", sa.Column("patient_key", sa.String(32)))
    op.create_index("ix_studies_patient_key", "studies", ["patient_key"])
    op.create_table(
        "dataset_snapshots",
        sa.Column("snapshot_hash", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("counts", sa.Text, nullable=False),
        sa.Column("n_items", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("snapshot_hash", name="pk_dataset_snapshots"),
    )
    op.create_table(
        "snapshot_items",
        sa.Column("snapshot_hash", sa.String(32), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("dicom_uri", sa.Text, nullable=False),
        sa.Column("label", sa.SmallInteger, nullable=False),
        sa.Column("split", sa.String(8), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("weight", sa.Float, nullable=False),
        sa.Column("patient_key", sa.String(32), nullable=False),
        sa.CheckConstraint("label IN (0, 1)", name="ck_snapshot_items_label_binary"),
        sa.CheckConstraint("weight > 0", name="ck_snapshot_items_weight_positive"),
        sa.ForeignKeyConstraint(
            ["snapshot_hash"],
            ["dataset_snapshots.snapshot_hash"],
            name="fk_snapshot_items_snapshot_hash_dataset_snapshots",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_hash", "study_id", name="pk_snapshot_items"),
    )


def downgrade() -> None:
    op.drop_table("snapshot_items")
    op.drop_table("dataset_snapshots")
    op.drop_index("ix_studies_patient_key", table_name="studies")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("patient_key")
