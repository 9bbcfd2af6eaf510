"""Entry points of the DAG tasks: settings in, small JSON-able summaries out.

Each function is what one Airflow task calls; it reads configuration itself and returns only
references and counts (XCom carries references, not data), so DAG files stay declarations.
No Airflow import here: every entry point runs from plain Python and the CLI too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import get_settings
from pipeline.logs import configure_logging


def migrate_store() -> str | None:
    """Migrate the store to the newest schema; return the revision it is at."""
    from pipeline.store import current_revision, make_engine, upgrade

    configure_logging()
    engine = make_engine(get_settings().db_url)
    upgrade(engine)
    return current_revision(engine)


def ingest_landed_batches(landing: str | None = None) -> dict[str, Any]:
    """Load the batch files waiting in the landing folder; return counts per table and the rejects."""
    from pipeline.store import make_engine
    from pipeline.store.files import ingest_landing

    configure_logging()
    settings = get_settings()
    folder = Path(landing) if landing else Path(settings.storage_root) / "landing"
    results = ingest_landing(make_engine(settings.db_url), folder)
    return {
        "files": [r.source for r in results],
        "written": sum(r.written for r in results),
        "unchanged": sum(r.unchanged for r in results),
        "rejected": sum(r.rejected for r in results),
        "rejects": [str(e) for r in results for e in r.errors][:100],
    }


def monitor_window(start: str, end: str) -> dict[str, Any]:
    """Run the monitoring checks on ``[start, end)`` (ISO timestamps); return the alert ids it touched."""
    from datetime import datetime

    from pipeline.alerts import init_sentry_from_settings
    from pipeline.monitor import run_monitor_from_settings

    configure_logging()
    init_sentry_from_settings()
    result, _ = run_monitor_from_settings(datetime.fromisoformat(start), datetime.fromisoformat(end))
    return {
        "window_start": start,
        "window_end": end,
        "report": str(result.report_path),
        "studies": result.studies,
        "findings": [f.alert_id for f in result.findings],
        "changes": {c.alert_id: c.event for c in result.changes},
        "insufficient_data": list(result.insufficient),
        "failed_expectations": [o.key for o in result.quality.failed()] if result.quality else [],
    }


def select_studies(day: str, budget: int | None = None) -> dict[str, Any]:
    """Pick the day's studies (ISO date) for labeling into ``relabel_queue``; return what was picked and why.

    Running it again for the same day tops the day up to its budget (nothing, when nothing changed).
    """
    from datetime import date

    from pipeline.selection import SelectionConfig, select_for_relabeling
    from pipeline.store import make_engine

    configure_logging()
    settings = get_settings()
    config = SelectionConfig(
        budget=settings.relabel_daily_budget if budget is None else budget, site_cap=settings.relabel_site_cap
    )
    selection = select_for_relabeling(make_engine(settings.db_url), date.fromisoformat(day), config)
    summary = selection.as_json()
    summary.pop("studies")
    return summary
