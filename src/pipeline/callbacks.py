"""What every DAG's tasks share, importable at parse time: nothing heavy is imported until a callback fires."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

OWNER = "mlops"

_Schedule = TypeVar("_Schedule")
_Otherwise = TypeVar("_Otherwise")


def on_task_failure(context: dict[str, Any]) -> None:
    """Report a failed task to Sentry (when ``PIPELINE_SENTRY_DSN`` is set), tagged with its DAG and task."""
    from pipeline.alerts import task_failure_callback
    from pipeline.resources import production

    if production().alerts.start():
        task_failure_callback(context)


def default_args(*, retry_delay: timedelta = timedelta(minutes=2), retries: int = 2) -> dict[str, Any]:
    """Return the task defaults of every DAG: owner, retries, retry delay and the Sentry failure callback."""
    return {"owner": OWNER, "retries": retries, "retry_delay": retry_delay, "on_failure_callback": on_task_failure}


def on_the_clock(schedule: _Schedule, otherwise: _Otherwise = None) -> _Schedule | _Otherwise:  # type: ignore[assignment]
    """A DAG's time-based ``schedule``, or ``otherwise`` (its asset schedule, or None: triggered runs only) when
    ``PIPELINE_TIME_SCHEDULES`` is false, as in a deployment that replays recorded days (``make demo``)."""
    from pipeline.config import get_settings

    return schedule if get_settings().time_schedules else otherwise
