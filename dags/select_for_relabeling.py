"""
### Pick studies for the radiologists, and put them in Label Studio

Every day at 01:30 UTC (for the day before), and at once when monitoring opens a drift alert
(asset `pipeline://monitoring/drift-alert`, for the alert's day), this DAG picks the studies most
worth a radiologist's time under the daily budget (`PIPELINE_RELABEL_DAILY_BUDGET`, at most
`PIPELINE_RELABEL_SITE_CAP` of it per site): the model's errors that radiologists overturned,
its uncertain studies, studies from sites with an open drift alert (the most unusual first), and
a random control sample; near-duplicates are spread out in embedding space. Every pick is kept in
`relabel_queue` with the reasons it was picked for; a study is never picked twice, and a second
run for a day only tops it up to its budget.

It then renders the picked studies (windowed PNG, pseudonymous names, no patient identifiers) into
the Label Studio projects (relabeling, error review, clinical QA) with the model's answer and
score as a pre-annotation. Tasks already pushed are found again, never duplicated.

Params (the trigger form): `day` to pick for another day, `budget` to override the daily budget.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from _assets import DRIFT_ALERT
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from pipeline.callbacks import default_args, on_the_clock


@dag(
    schedule=on_the_clock(
        AssetOrTimeSchedule(timetable=CronTriggerTimetable("30 1 * * *", timezone="UTC"), assets=DRIFT_ALERT),
        otherwise=DRIFT_ALERT,
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["labeling"],
    default_args=default_args(retry_delay=timedelta(minutes=2), retries=3),
    doc_md=__doc__,
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Pick for this day (YYYY-MM-DD); empty: the day before the run, or the drift alert's day.",
        ),
        "budget": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="Studies to pick for the day; empty: PIPELINE_RELABEL_DAILY_BUDGET.",
        ),
    },
)
def select_for_relabeling() -> None:
    @task
    def migrate_store() -> str | None:
        from pipeline.entry import production, store

        return store.migrate(production())

    @task
    def select(params=None, logical_date=None, dag_run=None, triggering_asset_events=None) -> dict:  # type: ignore[no-untyped-def]
        from pipeline.entry import labeling, production

        events = triggering_asset_events[DRIFT_ALERT] if triggering_asset_events else []
        when = logical_date or dag_run.run_after
        day = labeling.selection_day(params.get("day"), [e.extra.get("day") for e in events], when)
        return labeling.select(production(), day, params.get("budget"))

    @task
    def push(selection: dict) -> dict:  # type: ignore[type-arg]
        from pipeline.entry import labeling, production

        return labeling.push(production())

    migrate_store() >> push(select())


select_for_relabeling()
