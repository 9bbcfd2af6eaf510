"""
### Validate a candidate model against the champion

Runs when `retrain_model` publishes `pipeline://models/candidate` (the version is in the event), or
from the Airflow UI for any version. The suite scores the candidate and the champion on the fixed
test sets (regression, real balance per site, the champion's confirmed errors, unusual data; built
from the store on first use), leaves out the patients either model trained on, and checks AUROC
non-inferiority (DeLong), the operating point (sensitivity's lower bound at the target, the share
filtered as normal), calibration, subgroups, typical errors, unusual data, latency, memory and that
the version loads from the registry and reproduces its outputs. The verdict, a JSON result and an
HTML report go onto the version in MLflow. A passed version is published as
`pipeline://models/validated`, on which `promote_model` asks for approval.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from _assets import CANDIDATE, VALIDATED
from airflow.sdk import Param, dag, task

from pipeline.callbacks import default_args


@dag(
    schedule=[CANDIDATE],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["validation"],
    default_args=default_args(retry_delay=timedelta(minutes=2)),
    doc_md=__doc__,
    params={
        "version": Param(
            "candidate",
            type="string",
            description="The version (or alias) to validate; an asset run takes the event's.",
        ),
        "champion": Param("champion", type="string", description="The version (or alias) it must not be worse than."),
        "config": Param(
            {}, type="object", description="Margins of the gate (ValidationConfig fields, e.g. sensitivity_target)."
        ),
    },
)
def validate_candidate() -> None:
    @task
    def migrate_store() -> str | None:
        from pipeline.entry import production, store

        return store.migrate(production())

    @task(execution_timeout=timedelta(hours=2))
    def validate(params=None, triggering_asset_events=None) -> dict:  # type: ignore[no-untyped-def]
        from pipeline.entry import production, release

        version = params["version"]
        for event in (triggering_asset_events or {}).get(CANDIDATE, []):
            version = str(event.extra.get("version", version))
        summary = release.validate(production(), version, params["champion"], params["config"])
        summary.pop("verdict")  # the whole verdict is on the version in MLflow; XCom carries the summary
        return summary

    @task.short_circuit
    def passed(verdict: dict) -> bool:  # type: ignore[type-arg]
        return verdict["status"] == "passed"

    @task(outlets=[VALIDATED])
    def announce_validated(verdict: dict, outlet_events=None) -> str:  # type: ignore[no-untyped-def,type-arg]
        outlet_events[VALIDATED].extra = {"version": verdict["version"], "against": verdict["champion"]}
        return str(verdict["version"])

    verdict = validate()
    migrate_store() >> verdict
    passed(verdict) >> announce_validated(verdict)


validate_candidate()
