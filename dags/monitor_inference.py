"""
### Monitor the inference stream

Every hour (backfill-safe: each run checks its own data interval) this DAG checks the window's
inference logs and DICOM tags against the Great Expectations suites (run as SQL in the store),
and the technical health of every site and model version: volume against the usual, error rate
by type, latency, silence. It writes the window's metrics (table `monitor_metrics`, shaped for
Grafana), keeps one alert per ongoing problem (table `alerts`; Sentry when
`PIPELINE_SENTRY_DSN` is set), writes the HTML report and the Data Docs under the storage root,
and publishes the `pipeline://monitoring/window` asset when done; when a drift alert opens at a
site it also publishes `pipeline://monitoring/drift-alert` (its extra names the day and the
sites), on which `select_for_relabeling` picks studies at once. Re-running a window leaves the
same state.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from _assets import DRIFT_ALERT, MONITORING_WINDOW
from airflow.sdk import dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from pipeline.callbacks import default_args, on_the_clock


@dag(
    # A run covers [logical date, +1 h) and starts once that hour is over.
    schedule=on_the_clock(CronDataIntervalTimetable("0 * * * *", timezone="UTC")),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    tags=["monitoring"],
    default_args=default_args(retry_delay=timedelta(minutes=5)),
    doc_md=__doc__,
)
def monitor_inference() -> None:
    @task
    def migrate_store() -> str | None:
        from pipeline.entry import production, store

        return store.migrate(production())

    @task(outlets=[MONITORING_WINDOW])
    def check_window(data_interval_start=None, data_interval_end=None) -> dict:  # type: ignore[no-untyped-def]
        from pipeline.entry import monitoring, production

        return monitoring.check_window(production(), data_interval_start, data_interval_end)

    @task.short_circuit
    def drift_opened(summary: dict) -> bool:  # type: ignore[type-arg]
        return bool(summary["drift_opened"])

    @task(outlets=[DRIFT_ALERT])
    def announce_drift(summary: dict, outlet_events=None) -> list[str]:  # type: ignore[no-untyped-def,type-arg]
        outlet_events[DRIFT_ALERT].extra = {"day": summary["window_start"][:10], "sites": summary["drift_opened"]}
        return summary["drift_opened"]

    summary = check_window()
    migrate_store() >> summary
    drift_opened(summary) >> announce_drift(summary)


monitor_inference()
