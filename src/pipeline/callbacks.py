"""Airflow callbacks, importable by DAG files at parse time: nothing heavy is imported until one fires."""

from __future__ import annotations

from typing import Any


def on_task_failure(context: dict[str, Any]) -> None:
    """Report a failed task to Sentry (when ``PIPELINE_SENTRY_DSN`` is set), tagged with its DAG and task."""
    from pipeline.alerts.sentry import task_failure_callback

    task_failure_callback(context)
