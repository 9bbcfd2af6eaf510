"""A small monitored store the monitoring page's tests read: two sites, three days, alerts, picks and events."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from pipeline.alerts import Finding, Kind, Severity, sync_alerts
from pipeline.store.schema import model_events, monitor_metrics, relabel_queue

DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
MODEL = "cxr"


def fill_store(engine: sa.Engine) -> None:
    """Write 3 daily windows at two sites, one drifting feature, two open alerts, picks and events to ``engine``.

    Riverside's ``img_mean`` drifts (a warning); St Anna has a critical ``cuda_oom`` alert; 3 of Riverside's
    studies and 1 of St Anna's were picked for labeling; model ``cxr`` has one validation event.
    """
    rows = []
    for day in range(3):
        start = DAY0 + timedelta(days=day)
        for site, share in (("st-anna", 0.60), ("riverside", 0.70 - 0.2 * day), ("*", 0.65)):
            values = {"share_filtered_normal": share, "volume": 100.0 + day}
            if site != "*":
                # the drift check's distance/threshold pairs: riverside's img_mean moves to 2.5 thresholds on day 2;
                # two windows on day 2 at riverside: the day keeps the larger score
                values |= {"drift.img_mean.distance": 0.1 + (0.4 if site == "riverside" and day == 2 else 0.0)}
                values |= {"drift.img_mean.threshold": 0.2, "drift.kvp.distance": 0.05, "drift.kvp.threshold": 0.1}
                values |= {"drift.features_drifted": 0.0}
            for metric, value in values.items():
                rows.append(
                    {
                        "window_start": start,
                        "window_end": start + timedelta(days=1),
                        "site": site,
                        "model_version": "*",
                        "metric": metric,
                        "value": value,
                        "computed_at": start,
                    }
                )
        # a per-version row must not leak into the headline
        rows.append({**rows[-1], "model_version": "1", "metric": "share_filtered_normal", "value": 0.01})
    later = DAY0 + timedelta(days=2, hours=12)
    for metric, value in (("drift.img_mean.distance", 0.3), ("drift.img_mean.threshold", 0.2)):
        rows.append(
            {
                "window_start": later,
                "window_end": later + timedelta(hours=1),
                "site": "riverside",
                "model_version": "*",
                "metric": metric,
                "value": value,
                "computed_at": later,
            }
        )
    with engine.begin() as conn:
        conn.execute(sa.insert(monitor_metrics), rows)
    findings = [
        Finding(Kind.DRIFT, "riverside", "img_mean", "covariate_shift", 0.5, 0.2, Severity.WARNING, "img_mean moved"),
        Finding(Kind.TECHNICAL, "st-anna", "cuda_oom", "error_rate", 0.2, 0.02, Severity.CRITICAL, "OOM burst"),
    ]
    end = DAY0 + timedelta(days=3)
    sync_alerts(engine, findings, window_start=end - timedelta(days=1), window_end=end, checked=[])
    picks = [
        ("a" * 32, "riverside", "drift", "queued"),
        ("b" * 32, "riverside", "drift", "pushed"),
        ("c" * 32, "riverside", "uncertain", "labeled"),
        ("d" * 32, "st-anna", "error", "queued"),
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.insert(relabel_queue),
            [
                {
                    "study_id": study,
                    "site": site,
                    "model_version": "1",
                    "project": "relabeling",
                    "strategy": strategy,
                    "reasons": json.dumps({strategy: "test"}),
                    "priority": 1.0,
                    "prob_abnormal": 0.3,
                    "picked_for": date(2026, 3, 2 + i % 2),
                    "picked_at": end,
                    "status": status,
                }
                for i, (study, site, strategy, status) in enumerate(picks)
            ],
        )
        conn.execute(
            sa.insert(model_events),
            [
                {
                    "model_name": MODEL,
                    "version": "2",
                    "action": "validated",
                    "actor": "validation-suite",
                    "at": end,
                    "detail": json.dumps({"status": "passed", "against": "1"}),
                },
                {"model_name": "other", "version": "9", "action": "promoted", "actor": "x", "at": end, "detail": "{}"},
            ],
        )
