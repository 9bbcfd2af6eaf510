"""One monitoring run over a window: extract, check, write metrics, keep alerts in step.

Idempotent by construction: the window's metrics are replaced as a whole, and the alerts are
synchronised (``pipeline.alerts.sync_alerts``), so running a window again leaves the same state.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.alerts import GLOBAL, AlertChange, Finding, Kind, alert_periods, open_alerts, sync_alerts
from pipeline.monitor.drift import DriftRun, DriftThresholds, run_drift
from pipeline.monitor.expectations import QualityRun, run_expectations
from pipeline.monitor.quality import QualityBaseline, QualityThresholds, alert_key, check_quality
from pipeline.monitor.rules import RateRule
from pipeline.monitor.technical import ERROR_TYPES, TechnicalThresholds, check_technical
from pipeline.store import read_window
from pipeline.store.schema import inference_logs, monitor_metrics

log = logging.getLogger(__name__)

LOG_COLUMNS = ["study_id", "site", "model_version", "received_at", "status", "error_type", "latency_s", "decision"]


class EmptyWindow(ValueError):
    """A window whose end is not after its start."""


@dataclass(frozen=True)
class MonitorResult:
    """What one monitoring run saw and did."""

    window_start: datetime
    window_end: datetime
    studies: int
    metrics: pd.DataFrame  # site, model_version, metric, value
    findings: tuple[Finding, ...]
    changes: tuple[AlertChange, ...]
    insufficient: tuple[str, ...]
    quality: QualityRun | None = None
    drift: DriftRun | None = None
    report_path: Path | None = None

    def as_json(self, engine: Engine) -> dict[str, object]:
        """Return ``{"alerts": [...], "metrics": {...}}``: the open alerts after the run and the window's metrics."""
        metrics: dict[str, dict[str, float]] = {}
        for row in self.metrics.itertuples(index=False):
            key = row.site if row.model_version == GLOBAL else f"{row.site}@{row.model_version}"
            metrics.setdefault(key, {})[row.metric] = row.value
        return {
            "window": {
                "start": self.window_start.isoformat(),
                "end": self.window_end.isoformat(),
                "studies": self.studies,
            },
            "report": None if self.report_path is None else str(self.report_path),
            "alerts": [
                {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in a.items()}
                for a in open_alerts(engine)
            ],
            "findings": [f.__dict__ | {"alert_id": f.alert_id} for f in self.findings],
            "insufficient_data": list(self.insufficient),
            "failed_expectations": [
                {
                    "suite": o.suite,
                    "expectation": o.key,
                    "description": o.description,
                    "unexpected": o.unexpected,
                    "by_site": o.by_site,
                    "examples": list(o.examples),
                    "error": o.error,
                }
                for o in (self.quality.failed() if self.quality else [])
            ],
            "data_docs": str(self.quality.data_docs) if self.quality and self.quality.data_docs else None,
            "drift": {
                site: {
                    "reference": d.reference,
                    "reference_studies": d.reference_studies,
                    "shift": d.shift,
                    "features": [
                        {"feature": f.feature, "distance": f.distance, "threshold": f.threshold, "p_value": f.p_value}
                        for f in d.drifted()
                    ],
                    "prevalence": {"reference": d.prevalence_reference, "window": d.prevalence_window},
                    "expected_auroc": {
                        "reference": d.expected_auroc_reference,
                        "window": d.expected_auroc_window,
                        "window_recalibrated": d.recalibrated_auroc,
                        "recalibration_outcomes": d.recalibration_outcomes,
                        "calibration_p": d.calibration_p,
                    },
                    "feedback_auroc": {"reference": d.feedback_auroc, "studies": d.feedback_studies},
                    "samples": list(d.samples),
                }
                for site, d in (self.drift.sites.items() if self.drift else [])
            },
            "metrics": metrics,
        }


def _counts(engine: Engine, start: datetime, end: datetime, *, by_error: bool = False) -> pd.DataFrame:
    columns = [inference_logs.c.site] + ([inference_logs.c.error_type] if by_error else [])
    query = (
        sa.select(*columns, sa.func.count().label("n"))
        .where(inference_logs.c.received_at >= start, inference_logs.c.received_at < end)
        .group_by(*columns)
    )
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=[c.name for c in columns] + ["n"])


def _baselines(
    engine: Engine, start: datetime, end: datetime, weeks: int, rule: RateRule
) -> tuple[dict[str, float], dict[tuple[str, str], float], list[str]]:
    """Return the usual volume per site (median of the same window 1..weeks weeks back), error rates over the
    last 7 days (for sites with enough studies then), and every site seen in the baseline period."""
    weekly: dict[str, list[float]] = {}
    for k in range(1, weeks + 1):
        lag = timedelta(days=7 * k)
        for row in _counts(engine, start - lag, end - lag).itertuples(index=False):
            weekly.setdefault(str(row.site), []).append(float(row.n))
    # Day-sized windows also learn from the last days (the simulator has no weekday pattern).
    span = end - start
    if span >= timedelta(hours=12):
        for k in range(1, 7):
            for row in _counts(engine, start - k * span, end - k * span).itertuples(index=False):
                weekly.setdefault(str(row.site), []).append(float(row.n))
    expected = {site: statistics.median(v) for site, v in weekly.items() if len(v) >= 2}
    since = start - timedelta(days=7)
    recent = _counts(engine, since, start, by_error=True)
    failed = {
        (str(r.site), str(r.error_type)): float(r.n)
        for r in recent.itertuples(index=False)
        if isinstance(r.error_type, str)
    }
    totals = {str(site): float(n) for site, n in recent.groupby("site")["n"].sum().items()}
    rates: dict[tuple[str, str], float] = {}
    for site, total in totals.items():
        for error in ERROR_TYPES:
            rate = rule.baseline(failed.get((site, error), 0.0), total)
            if rate is not None:
                rates[(site, error)] = rate
    # An error type that was alerting: its baseline leaves the alert's period out.
    for (site, feature, statistic), period in alert_periods(engine, str(Kind.TECHNICAL), since, start).items():
        if statistic == "error_rate" and site in totals:
            kept, kept_failed = _counts_outside(engine, site, feature, since, start, period)
            rate = rule.baseline(kept_failed, kept)
            if rate is None:
                rates.pop((site, feature), None)
            else:
                rates[(site, feature)] = rate
    return expected, rates, sorted(weekly)


def _counts_outside(
    engine: Engine, site: str, error: str, since: datetime, until: datetime, period: tuple[datetime, datetime]
) -> tuple[float, float]:
    """Return the studies of ``site`` in ``[since, until)`` outside ``period``, and those that failed with ``error``."""
    t = inference_logs.c.received_at
    query = sa.select(sa.func.count(), sa.func.count().filter(inference_logs.c.error_type == error)).where(
        inference_logs.c.site == site,
        t >= since,
        t < until,
        sa.not_(sa.and_(t >= period[0], t < period[1])),
    )
    with engine.connect() as conn:
        total, failed = conn.execute(query).one()
    return float(total), float(failed)


def _last_seen(engine: Engine, end: datetime) -> dict[str, datetime | None]:
    query = (
        sa.select(inference_logs.c.site, sa.func.max(inference_logs.c.received_at))
        .where(inference_logs.c.received_at < end)
        .group_by(inference_logs.c.site)
    )
    with engine.connect() as conn:
        return {site: (t if t is None or t.tzinfo else t.replace(tzinfo=UTC)) for site, t in conn.execute(query).all()}


def _quality_baseline(engine: Engine, start: datetime, days: int = 7) -> QualityBaseline:
    """Return the rows checked and the rows that broke each expectation, per site, over the days before
    ``start``; windows while a quality alert on that expectation was open are left out."""
    since = start - timedelta(days=days)
    metric = monitor_metrics.c.metric
    query = sa.select(
        monitor_metrics.c.window_start,
        monitor_metrics.c.window_end,
        monitor_metrics.c.site,
        metric,
        monitor_metrics.c.value,
    ).where(
        metric.like("quality.%"),
        sa.or_(metric.like("%.unexpected"), metric.like("%.rows")),
        monitor_metrics.c.model_version == GLOBAL,
        monitor_metrics.c.window_start >= since,
        monitor_metrics.c.window_end <= start,
    )
    with engine.connect() as conn:
        frame = pd.DataFrame(
            conn.execute(query).all(), columns=["window_start", "window_end", "site", "metric", "value"]
        )
    if frame.empty:
        return QualityBaseline()
    for column in ("window_start", "window_end"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    parts = frame["metric"].str.split(".")
    frame["suite"] = parts.str[1]
    frame["key"] = parts.str[2:-1].str.join(".")
    is_rows = parts.str[-1] == "rows"
    checked = frame[is_rows]
    rows = checked.groupby(["site", "suite"])["value"].sum()
    failed: dict[tuple[str, str, str], float] = {}
    rows_by_key: dict[tuple[str, str, str], float] = {}
    periods = alert_periods(engine, str(Kind.QUALITY), since, start)
    for (site, suite, key), part in frame[~is_rows].groupby(["site", "suite", "key"]):
        period = periods.get(alert_key(str(site), str(key)))
        if period is None:
            failed[(str(site), str(suite), str(key))] = float(part["value"].sum())
            continue
        overlaps = (checked["window_end"] > period[0]) & (checked["window_start"] < period[1])
        kept = checked[(checked["site"] == site) & (checked["suite"] == suite) & ~overlaps]
        kept_windows = set(kept["window_start"])
        failed[(str(site), str(suite), str(key))] = float(part[part["window_start"].isin(kept_windows)]["value"].sum())
        rows_by_key[(str(site), str(suite), str(key))] = float(kept["value"].sum())
    return QualityBaseline(failed, {(str(a), str(b)): float(v) for (a, b), v in rows.items()}, rows_by_key)


def _write_metrics(engine: Engine, start: datetime, end: datetime, metrics: pd.DataFrame) -> None:
    rows = metrics.dropna(subset=["value"]).assign(window_start=start, window_end=end, computed_at=datetime.now(UTC))
    with engine.begin() as conn:
        conn.execute(
            monitor_metrics.delete().where(monitor_metrics.c.window_start == start, monitor_metrics.c.window_end == end)
        )
        if len(rows):
            conn.execute(monitor_metrics.insert(), rows.to_dict("records"))


def report_path_for(root: Path, start: datetime, end: datetime) -> Path:
    """Return where the report of a window lives under ``root``."""
    return root / "reports" / "monitoring" / f"{start:%Y%m%dT%H%M}_{end:%Y%m%dT%H%M}.html"


def run_monitor(
    engine: Engine,
    start: datetime,
    end: datetime,
    *,
    baseline_weeks: int = 4,
    thresholds: TechnicalThresholds | None = None,
    quality_thresholds: QualityThresholds | None = None,
    drift_thresholds: DriftThresholds | None = None,
    check_drift: bool = True,
    gx_project_dir: Path | None = None,
    gx_data_dir: Path | None = None,
    report_path: Path | None = None,
) -> MonitorResult:
    """Check the window ``[start, end)`` of the inference logs; write its metrics and synchronise the alerts.

    With ``gx_project_dir`` (the Great Expectations project holding the suites), the window's data
    quality is checked too, and its validation results and Data Docs are written under
    ``gx_data_dir`` (default: the project's ``gx/uncommitted``, ignored by git). Every alert links to
    ``report_path``, where the caller writes the window's HTML report from the result
    (``pipeline.reports.write_run_report``; the monitoring entry does).
    Drift and label-free performance are checked against ``drift_thresholds``' reference
    (``check_drift=False`` skips them).

    Raises:
        EmptyWindow: ``end`` is not after ``start``.
    """
    if end <= start:
        raise EmptyWindow(f"window end {end.isoformat()} is not after its start {start.isoformat()}")
    logs = read_window(engine, "inference_logs", start, end, columns=LOG_COLUMNS)
    thresholds = thresholds or TechnicalThresholds()
    quality_thresholds = quality_thresholds or QualityThresholds()
    expected, rates, known = _baselines(engine, start, end, baseline_weeks, thresholds.errors)
    sites = sorted(set(known) | set(logs["site"].dropna().astype(str)))
    technical = check_technical(
        logs,
        expected_volume=expected,
        baseline_error_rates=rates,
        last_seen=_last_seen(engine, end),
        window_end=end,
        sites=sites,
        thresholds=thresholds,
    )
    findings = list(technical.findings)
    metrics = [technical.metrics]
    insufficient = set(technical.insufficient)
    checked = [(str(Kind.TECHNICAL), site) for site in sites]
    quality_run = None
    if gx_project_dir is not None:
        quality_run = run_expectations(
            engine,
            start,
            end,
            project_dir=gx_project_dir,
            data_dir=gx_data_dir or gx_project_dir / "gx" / "uncommitted",
        )
        quality = check_quality(
            quality_run, baseline=_quality_baseline(engine, start), sites=sites, thresholds=quality_thresholds
        )
        findings.extend(quality.findings)
        metrics.append(quality.metrics)
        insufficient.update(quality.insufficient)
        checked.extend((str(Kind.QUALITY), site) for site in [*sites, GLOBAL])
    drift_run = None
    if check_drift:
        drift_run = run_drift(engine, start, end, drift_thresholds)
        findings.extend(drift_run.findings)
        if len(drift_run.metrics):
            metrics.append(drift_run.metrics)
        checked.extend((str(kind), site) for site in drift_run.evaluated for kind in (Kind.DRIFT, Kind.PERFORMANCE))
    all_metrics = pd.concat(metrics, ignore_index=True)
    _write_metrics(engine, start, end, all_metrics)
    changes = sync_alerts(
        engine,
        findings,
        window_start=start,
        window_end=end,
        checked=checked,
        report_path=None if report_path is None else str(report_path),
    )
    log.info(
        "monitor %s..%s: %d studies, %d findings, %d sites with too little data",
        start.isoformat(),
        end.isoformat(),
        len(logs),
        len(findings),
        len(insufficient),
    )
    return MonitorResult(
        start,
        end,
        len(logs),
        all_metrics,
        tuple(findings),
        tuple(changes),
        tuple(sorted(insufficient)),
        quality_run,
        drift_run,
        report_path,
    )
