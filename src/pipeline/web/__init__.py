"""The monitoring page: per site, the headline metric over time, open alerts, drift by feature and day,
the relabel queue, and the model's versions with their validation verdicts.

A FastAPI app (:func:`create_app`) that Airflow's API server mounts through the plugin in
``plugins/`` (``auth="airflow"``), or that serves on its own behind ``PIPELINE_WEB_TOKEN``
(``auth="token"``, :mod:`pipeline.web.access`); it reads the store and MLflow's registry and computes
nothing of its own. Airflow
imports plugins in every component, so importing this package costs only FastAPI: the names below
other than ``create_app``, ``PageConfig`` and ``store_label`` are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.web.app import PageConfig, create_app, store_label

if TYPE_CHECKING:
    from pipeline.web.page import Overview, Registry, gather, read_registry, render_page
    from pipeline.web.queries import (
        Alert,
        DriftCell,
        HeadlinePoint,
        ModelEvent,
        Period,
        QueueCount,
        SiteSummary,
        drift_scores,
        headline_series,
        list_sites,
        open_alerts,
        period_of,
        recent_model_events,
        relabel_queue_counts,
        site_summaries,
    )
    from pipeline.web.registry import ModelVersionView, RegistryUnavailable, model_versions

_LAZY = {
    **dict.fromkeys(("Overview", "Registry", "gather", "read_registry", "render_page"), "pipeline.web.page"),
    **dict.fromkeys(
        (
            "Alert",
            "DriftCell",
            "HeadlinePoint",
            "ModelEvent",
            "Period",
            "QueueCount",
            "SiteSummary",
            "drift_scores",
            "headline_series",
            "list_sites",
            "open_alerts",
            "period_of",
            "recent_model_events",
            "relabel_queue_counts",
            "site_summaries",
        ),
        "pipeline.web.queries",
    ),
    **dict.fromkeys(("ModelVersionView", "RegistryUnavailable", "model_versions"), "pipeline.web.registry"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Alert",
    "DriftCell",
    "HeadlinePoint",
    "ModelEvent",
    "ModelVersionView",
    "Overview",
    "PageConfig",
    "Period",
    "QueueCount",
    "Registry",
    "RegistryUnavailable",
    "SiteSummary",
    "create_app",
    "drift_scores",
    "gather",
    "headline_series",
    "list_sites",
    "model_versions",
    "open_alerts",
    "period_of",
    "read_registry",
    "recent_model_events",
    "relabel_queue_counts",
    "render_page",
    "site_summaries",
    "store_label",
]
