"""The monitoring entry: check one window of the inference stream (``monitor_inference``, ``pipeline monitor``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.resources import Resources


def check_window(
    res: Resources, start: datetime | str, end: datetime | str, *, report_path: Path | None = None, detail: bool = False
) -> dict[str, Any]:
    """Run the monitoring checks on ``[start, end)`` (UTC; ISO strings or datetimes) and write the window's report.

    Data quality against the Great Expectations suites (results and Data Docs under the storage root), the
    technical health of every site and model version, drift and the label-free performance estimate; the
    window's metrics and alerts (Sentry when a DSN is set). The store is migrated first; the report goes to
    ``report_path`` or its place under ``<storage root>/reports/monitoring/``.

    Returns the alert ids the run touched, the sites whose drift alert opened (the selection runs on them), the
    sites with too little data and the failed expectations; with ``detail``, also the open alerts, the findings
    and the window's metrics (``MonitorResult.as_json``) under ``"detail"``.

    Raises:
        pipeline.monitor.EmptyWindow: ``end`` is not after ``start``.
    """
    from pipeline.monitor import report_path_for, run_monitor
    from pipeline.reports import write_run_report
    from pipeline.store import upgrade

    start, end = _utc(start), _utc(end)
    res.alerts.start()
    upgrade(res.store)
    result = run_monitor(
        res.store,
        start,
        end,
        gx_project_dir=res.gx_project_dir,
        gx_data_dir=res.storage.data_docs,
        report_path=report_path or report_path_for(res.storage.root, start, end),
    )
    write_run_report(res.store, result)
    summary: dict[str, Any] = {
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "report": str(result.report_path),
        "studies": result.studies,
        "findings": [f.alert_id for f in result.findings],
        "changes": {c.alert_id: c.event for c in result.changes},
        "drift_opened": sorted(
            {
                c.finding.site
                for c in result.changes
                if c.finding is not None and c.finding.kind == "drift" and c.event in ("opened", "reopened")
            }
        ),
        "insufficient_data": list(result.insufficient),
        "failed_expectations": [o.key for o in result.quality.failed()] if result.quality else [],
    }
    if detail:
        summary["detail"] = result.as_json(res.store)
    return summary


def _utc(moment: datetime | str) -> datetime:
    # a plain datetime: Airflow hands pendulum's, which pandas will not compare with its UTC timestamps
    moment = datetime.fromisoformat(moment if isinstance(moment, str) else moment.isoformat())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
