"""Alerts: findings of the monitoring checks, their lifecycle in the store, and Sentry."""

from pipeline.alerts.lifecycle import AlertChange, alert_periods, open_alerts, sync_alerts
from pipeline.alerts.model import GLOBAL, Finding, Kind, Severity, alert_id
from pipeline.alerts.sentry import init_sentry, send_alert, task_failure_callback

__all__ = [
    "GLOBAL",
    "AlertChange",
    "Finding",
    "Kind",
    "Severity",
    "alert_id",
    "alert_periods",
    "init_sentry",
    "open_alerts",
    "send_alert",
    "sync_alerts",
    "task_failure_callback",
]
