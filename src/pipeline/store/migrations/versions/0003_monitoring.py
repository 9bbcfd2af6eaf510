"""Monitoring: metrics per window, site and model version; alerts with their lifecycle.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "monitor_metrics",
        sa.Column("window_start", UTC_TS, nullable=False),
        sa.Column("window_end", UTC_TS, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(96), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("computed_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint(
            "window_start", "window_end", "site", "model_version", "metric", name="pk_monitor_metrics"
        ),
    )
    op.create_index("ix_monitor_metrics_metric_window", "monitor_metrics", ["metric", "window_start"])
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("feature", sa.String(96), nullable=False),
        sa.Column("statistic", sa.String(64), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("first_seen", UTC_TS, nullable=False),
        sa.Column("last_seen", UTC_TS, nullable=False),
        sa.Column("closed_at", UTC_TS),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("report_path", sa.Text),
        sa.PrimaryKeyConstraint("alert_id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_status_kind", "alerts", ["status", "kind"])


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("monitor_metrics")
