"""Sending alerts and task failures to Sentry, grouped by what broke where.

Sentry is off unless a DSN is configured. Each alert event carries tags (kind, site, feature,
severity) and a fingerprint of (kind, site, feature) so Sentry groups an ongoing problem into
one issue however often it is reported.
"""

from __future__ import annotations

import logging
from typing import Any

import sentry_sdk

from pipeline.alerts.model import Finding

log = logging.getLogger(__name__)


def init_sentry(dsn: str | None, *, environment: str = "production", transport: Any = None) -> bool:
    """Initialise sentry-sdk once per process; return whether Sentry is on.

    Args:
        dsn: the project's DSN, or None/empty to stay off.
        environment: Sentry environment name.
        transport: a sentry-sdk ``Transport`` (tests capture events with one).
    """
    if not dsn:
        return False
    client = sentry_sdk.get_client()
    if client.is_active() and client.dsn == dsn and transport is None:
        return True
    sentry_sdk.init(dsn=dsn, environment=environment, transport=transport, default_integrations=False)
    return True


def send_alert(finding: Finding, *, event: str, report_path: str | None = None) -> str | None:
    """Send one alert event (``opened``, ``reopened``, ``escalated``) to Sentry; return the event id (None when off)."""
    if not sentry_sdk.get_client().is_active():
        return None
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("kind", str(finding.kind))
        scope.set_tag("site", finding.site)
        scope.set_tag("feature", finding.feature)
        scope.set_tag("severity", str(finding.severity))
        scope.set_tag("alert_event", event)
        scope.fingerprint = ["pipeline-alert", str(finding.kind), finding.site, finding.feature]
        scope.set_context(
            "alert",
            {
                "statistic": finding.statistic,
                "value": finding.value,
                "threshold": finding.threshold,
                "report": report_path,
                "alert_id": finding.alert_id,
            },
        )
        message = f"[{finding.kind}] {finding.site}: {finding.message}"
        return sentry_sdk.capture_message(message, level="error" if finding.severity == "critical" else "warning")


def task_failure_callback(context: dict[str, Any]) -> None:
    """Airflow ``on_failure_callback``: report the failed task's exception to Sentry with DAG and task tags.

    Airflow's own ``[sentry]`` integration has been unreliable through 3.x, so the project
    initialises sentry-sdk itself (``pipeline.callbacks``, from ``PIPELINE_SENTRY_DSN``); nothing is sent
    while it is off.
    """
    if not sentry_sdk.get_client().is_active():
        return
    ti = context.get("task_instance") or context.get("ti")
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("dag_id", getattr(ti, "dag_id", "?"))
        scope.set_tag("task_id", getattr(ti, "task_id", "?"))
        scope.set_tag("try_number", str(getattr(ti, "try_number", "?")))
        scope.fingerprint = ["airflow-task-failure", getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?")]
        exception = context.get("exception")
        if isinstance(exception, BaseException):
            sentry_sdk.capture_exception(exception)
        else:
            sentry_sdk.capture_message(
                f"task {getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')} failed: {exception}"
            )
    sentry_sdk.flush(timeout=5)
