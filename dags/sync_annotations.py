"""
### Bring finished annotations home

Every 30 minutes this DAG pulls the annotations finished in Label Studio since its last run
(page by page, each page in one transaction; a crash or a Label Studio restart loses nothing and
duplicates nothing) into the `labels` table with annotator, time and task id, and moves the
studies of `relabel_queue` to `labeled`. Where several annotators labeled a study it measures
their agreement per project (Cohen's or Fleiss' kappa) and sends disagreements to the
adjudication project; an adjudicated label settles the study.

When it brought labels and the labeled studies that no snapshot holds yet reach
`PIPELINE_NEW_LABELS_THRESHOLD`, it publishes the `pipeline://labels/new` asset, on which
retraining runs (small syncs add up; the retraining's snapshot resets the count). Label Studio down: the task retries,
then fails naming the server; nothing is half-written.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from _assets import NEW_LABELS
from airflow.sdk import CronTriggerTimetable, dag, task

from pipeline.callbacks import default_args, on_the_clock


@dag(
    schedule=on_the_clock(CronTriggerTimetable("*/30 * * * *", timezone="UTC")),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["labeling"],
    default_args=default_args(retry_delay=timedelta(minutes=1), retries=3),
    doc_md=__doc__,
)
def sync_annotations() -> None:
    @task
    def migrate_store() -> str | None:
        from pipeline.entry import production, store

        return store.migrate(production())

    @task
    def sync() -> dict:  # type: ignore[type-arg]
        from pipeline.entry import labeling, production

        return labeling.sync(production())

    @task.short_circuit
    def enough_new_labels(summary: dict) -> bool:  # type: ignore[type-arg]
        return bool(summary["new_labels_ready"])

    @task(outlets=[NEW_LABELS])
    def announce_new_labels(summary: dict, outlet_events=None) -> int:  # type: ignore[no-untyped-def,type-arg]
        outlet_events[NEW_LABELS].extra = {"new": summary["new"]}
        return int(summary["new"])

    summary = sync()
    migrate_store() >> summary
    enough_new_labels(summary) >> announce_new_labels(summary)


sync_annotations()
