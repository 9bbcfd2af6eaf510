"""Initial store: studies, inference logs, feedback, ingest rejects.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("acquired_at", UTC_TS, nullable=False),
        sa.Column("dicom_uri", sa.Text, nullable=False),
        sa.Column("modality", sa.String(16)),
        sa.Column("manufacturer", sa.String(128)),
        sa.Column("model_name", sa.String(128)),
        sa.Column("view_position", sa.String(16)),
        sa.Column("body_part", sa.String(64)),
        sa.Column("kvp", sa.Float),
        sa.Column("exposure_mas", sa.Float),
        sa.Column("pixel_spacing_mm", sa.Float),
        sa.Column("rows", sa.Integer),
        sa.Column("columns", sa.Integer),
        sa.Column("bits_stored", sa.Integer),
        sa.Column("photometric", sa.String(16)),
        sa.Column("patient_age_years", sa.Float),
        sa.Column("patient_sex", sa.String(1)),
        sa.Column("img_mean", sa.Float),
        sa.Column("img_std", sa.Float),
        sa.Column("img_p01", sa.Float),
        sa.Column("img_p50", sa.Float),
        sa.Column("img_p99", sa.Float),
        sa.Column("img_clipped_frac", sa.Float),
        sa.PrimaryKeyConstraint("study_id", name="pk_studies"),
    )
    op.create_index("ix_studies_site", "studies", ["site"])
    op.create_index("ix_studies_acquired_at", "studies", ["acquired_at"])

    op.create_table(
        "inference_logs",
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("received_at", UTC_TS, nullable=False),
        sa.Column("finished_at", UTC_TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_type", sa.String(32)),
        sa.Column("error_detail", sa.Text),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("prob_abnormal", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("decision", sa.String(16)),
        sa.Column("entropy", sa.Float),
        sa.Column("epistemic_var", sa.Float),
        sa.Column("embedding", sa.LargeBinary),
        sa.CheckConstraint(
            "prob_abnormal IS NULL OR (prob_abnormal >= 0 AND prob_abnormal <= 1)",
            name="ck_inference_logs_prob_range",
        ),
        sa.CheckConstraint("latency_s >= 0", name="ck_inference_logs_latency_nonneg"),
        sa.PrimaryKeyConstraint("study_id", "model_version", name="pk_inference_logs"),
    )
    op.create_index("ix_inference_logs_received_at_site", "inference_logs", ["received_at", "site"])

    op.create_table(
        "feedback",
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("reported_at", UTC_TS, nullable=False),
        sa.Column("model_version", sa.String(64)),
        sa.Column("final_abnormal", sa.Boolean, nullable=False),
        sa.Column("final_finding", sa.String(64), nullable=False),
        sa.Column("agrees_with_model", sa.Boolean),
        sa.PrimaryKeyConstraint("study_id", name="pk_feedback"),
    )
    op.create_index("ix_feedback_reported_at", "feedback", ["reported_at"])

    op.create_table(
        "ingest_rejects",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("row_number", sa.Integer, nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("study_id", sa.String(64)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("rejected_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_rejects"),
        sa.UniqueConstraint("source", "table_name", "row_number", "field", name="uq_ingest_rejects_row_field"),
    )
    op.create_index("ix_ingest_rejects_rejected_at", "ingest_rejects", ["rejected_at"])


def downgrade() -> None:
    op.drop_table("ingest_rejects")
    op.drop_table("feedback")
    op.drop_table("inference_logs")
    op.drop_table("studies")
