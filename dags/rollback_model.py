"""
### Roll the champion back

Triggered from the Airflow UI when the serving model misbehaves: moves the `champion` alias back to
`previous` (or to a named version that served before) in seconds, records who and why on the version
and in the audit trail. The inference service picks the alias up on its next model load.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from pipeline.callbacks import default_args


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["release"],
    default_args=default_args(),
    doc_md=__doc__,
    params={
        "to": Param("previous", type="string", description="A version that served before, or 'previous'."),
        "reason": Param("", type="string", description="Why (recorded)."),
    },
)
def rollback_model() -> None:
    @task
    def roll_back(params=None, dag_run=None) -> dict:  # type: ignore[no-untyped-def]
        from pipeline.entry import production, release

        actor = getattr(dag_run, "triggering_user_name", None) or "airflow"
        return release.rollback(production(), params["to"], str(actor), params["reason"])

    roll_back()


rollback_model()
