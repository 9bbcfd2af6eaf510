"""Logging setup shared by the CLI and the Airflow tasks.

Great Expectations registers hundreds of documentation helpers at import and logs each at INFO
through whatever handler is active (next to Airflow's structlog that floods task logs), and
MLflow, alembic and urllib3 are chatty too. One call quiets them and keeps ours at INFO.
"""

from __future__ import annotations

import logging

NOISY_LOGGERS = (
    "great_expectations",
    "great_expectations._docs_decorators",
    "alembic.runtime.migration",
    "urllib3",
    "matplotlib",
    "PIL",
    "mlflow",
    "git",
)


def configure_logging(level: str | int | None = None) -> None:
    """Send pipeline logs to stderr at ``level`` (default INFO; ``PIPELINE_LOG_LEVEL`` through the settings) and
    quiet noisy libraries."""
    level = level or "INFO"
    quiet_libraries()
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("pipeline").setLevel(level)


def quiet_libraries(level: int = logging.WARNING) -> None:
    """Raise the threshold of the libraries that log at import or per request."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)
