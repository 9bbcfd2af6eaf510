"""The entry layer: one module per stage, what both a DAG task and the ``pipeline`` CLI command call.

``store`` (schema, batch files), ``monitoring``, ``labeling`` (selection, Label Studio), ``training``
(bootstrap, retraining), ``release`` (test sets, validation, shadow, approval, promotion, rollback) and
``simulation`` (the hospitals of a scenario). Each function takes the :class:`~pipeline.resources.Resources`
first, hands the stages what they need, writes the reports from their results and returns a small JSON-able
summary (what XCom carries). The CLI only parses its options and formats these summaries; a DAG task only
reads its context and returns them. No Airflow and no click here.

    from pipeline.entry import monitoring, production
    summary = monitoring.check_window(production(), "2026-01-30T00:00", "2026-01-31T00:00")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.resources import Resources


def production() -> Resources:
    """The resources of this process's ``PIPELINE_*`` environment, with the pipeline's logging set up (a task's).

    The settings are read here, when a task runs, not when a DAG file that names an entry is parsed.
    """
    from pipeline.logs import configure_logging
    from pipeline.resources import production as build

    resources = build()
    configure_logging(resources.settings.log_level)
    return resources


__all__ = ["production"]
