"""
### Promote a validated model, on a release manager's approval

Runs when `validate_candidate` publishes `pipeline://models/validated`, or from the Airflow UI for a
version. Only a version whose validation passed gets this far: `check_validated` fails otherwise.
The `approve` task (Airflow's human-in-the-loop operator, answers Approve or Reject) waits for a human
in the Airflow UI (Required actions), showing the validation summary and where its report is; `decide`
acts on the answer. On **Approve**, the `champion` alias moves to the version and the
replaced champion keeps the alias `previous`; the approver (the Airflow user who answered) and the
time are recorded on the version and in the audit trail. On **Reject**, the rejection is recorded
with who and the reason given in the form, and the aliases stay where they are.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Asset, Param, dag, task

from pipeline.callbacks import default_args

VALIDATED = Asset("pipeline://models/validated")
APPROVE, REJECT = "Approve", "Reject"


@dag(
    schedule=[VALIDATED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    tags=["validation", "release"],
    default_args=default_args(),
    doc_md=__doc__,
    params={"version": Param("", type="string", description="The validated version (an asset run takes the event's).")},
)
def promote_model() -> None:
    @task
    def check_validated(params=None, triggering_asset_events=None) -> dict:  # type: ignore[no-untyped-def]
        from pipeline.tasks import promotion_request

        version = params["version"]
        for event in (triggering_asset_events or {}).get(VALIDATED, []):
            version = str(event.extra.get("version", version))
        return promotion_request(version)

    request = check_validated()
    # The human-in-the-loop operator with the two answers of an approval. (`ApprovalOperator` skips its
    # downstream on Reject before its answer reaches XCom, so a rejection's who and why would be lost.)
    approve = HITLOperator(
        task_id="approve",
        subject="Promote {{ ti.xcom_pull(task_ids='check_validated')['version'] }} to champion?",
        body="{{ ti.xcom_pull(task_ids='check_validated')['summary'] }}",
        options=[APPROVE, REJECT],
        params={"reason": Param("", type="string", description="Why (required to reject; kept on the version).")},
        response_timeout=timedelta(days=7),
    )

    @task
    def decide(request: dict, approval: dict) -> dict:  # type: ignore[type-arg]
        from pipeline.tasks import decide_promotion

        return decide_promotion(request["version"], approval)

    decide(request, approve.output)
    request >> approve


promote_model()
