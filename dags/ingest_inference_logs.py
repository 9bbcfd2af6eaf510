"""
### Ingest inference logs shipped as batch files

Inference services that cannot write to the log store directly (an edge box at a hospital)
drop one file per batch into `<storage root>/landing/<table>/`: CSV, JSON lines or Parquet.
Every hour this DAG migrates the store if needed, then loads each waiting file in its own
transaction and moves it to `processed/`. Bad rows are rejected with the row and field named
(table `ingest_rejects`); an unparsable file goes to `quarantine/` with a reason. Re-running
changes nothing: rows are keyed by study and model version.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from pipeline.callbacks import default_args, on_the_clock


@dag(
    schedule=on_the_clock("@hourly"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["store", "ingest"],
    default_args=default_args(),
    doc_md=__doc__,
)
def ingest_inference_logs() -> None:
    @task
    def migrate_store() -> str | None:
        from pipeline.entry import production, store

        return store.migrate(production())

    @task
    def ingest_landed_batches() -> dict:
        from pipeline.entry import production, store

        return store.ingest_landing(production())

    migrate_store() >> ingest_landed_batches()


ingest_inference_logs()
